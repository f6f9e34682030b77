// Metrics: totals per command, errors, in-flight, per-second rates and latency percentiles.
import { describe, expect, test } from "bun:test";
import { DeviceMetrics } from "../../src/engine/metrics.ts";
import { CMD } from "../../src/engine/protocol/constants.ts";

describe("device metrics", () => {
  test("totals count operations, bytes and errors per command, and in-flight returns to zero", () => {
    const m = new DeviceMetrics();
    for (let i = 0; i < 10; i++) m.end(CMD.READ, 4096, m.begin(), true);
    for (let i = 0; i < 3; i++) m.end(CMD.WRITE, 65536, m.begin(), true);
    m.end(CMD.WRITE, 512, m.begin(), false);
    const started = m.begin();
    expect(m.snapshot().inFlight).toBe(1);
    m.end(CMD.FLUSH, 0, started, true);
    const s = m.snapshot();
    expect(s.totals.read).toEqual({ ops: 10, bytes: 40960, errors: 0 });
    expect(s.totals.write).toEqual({ ops: 4, bytes: 196608, errors: 1 });
    expect(s.totals.flush?.ops).toBe(1);
    expect(s.inFlight).toBe(0);
  });

  test("rates come from complete seconds in the window, and history has 60 seconds", () => {
    let now = 1_000_000;
    const m = new DeviceMetrics(() => now);
    for (let second = 0; second < 5; second++) {
      for (let i = 0; i < 100; i++) m.end(CMD.READ, 4096, m.begin(), true);
      for (let i = 0; i < 50; i++) m.end(CMD.WRITE, 8192, m.begin(), true);
      now += 1000;
    }
    const s = m.snapshot(5);
    expect(s.readIops).toBe(100);
    expect(s.writeIops).toBe(50);
    expect(s.readBytesPerSecond).toBe(409600);
    expect(s.writeBytesPerSecond).toBe(409600);
    expect(s.history.length).toBe(60);
    expect(s.history.at(-1)?.readOps).toBe(100);
    expect(s.history.at(-6)?.readOps).toBe(0);
  });

  test("latency percentiles reflect slow requests", async () => {
    const m = new DeviceMetrics();
    for (let i = 0; i < 98; i++) m.end(CMD.READ, 1, m.begin(), true);
    for (let i = 0; i < 2; i++) {
      const started = m.begin();
      await Bun.sleep(20);
      m.end(CMD.READ, 1, started, true);
    }
    const s = m.snapshot(1);
    expect(s.latencyP50Micros).toBeLessThan(1000);
    expect(s.latencyP99Micros).toBeGreaterThan(15_000);
  });
});

describe("latency percentiles", () => {
  test("are upper bounds within a quarter octave of the true value", () => {
    for (const micros of [100, 777, 12_345, 1_000_000]) {
      const m = new DeviceMetrics();
      const now = performance.now();
      m.end(CMD.READ, 1, m.begin(now - micros / 1000), true);
      // The true latency is `micros` plus however long this thread took to reach end()'s clock read (a busy CI box
      // can preempt it for tens of microseconds): at most the time up to here.
      const trueMax = (performance.now() - now) * 1000 + micros;
      const p50 = m.snapshot(1).latencyP50Micros;
      expect(p50).toBeGreaterThanOrEqual(micros * 0.99);
      expect(p50).toBeLessThanOrEqual(trueMax * 1.3 + 10);
    }
  });
});
