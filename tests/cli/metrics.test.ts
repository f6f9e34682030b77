// --metrics: a scrape of /metrics after a known number of fio requests shows those counts, the latency histogram
// counts them too, every device gauge is there, and `promtool check metrics` (Debian's prometheus) finds nothing.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join, resolve } from "node:path";
import { renderPrometheus } from "../../src/app/metrics/prometheus.ts";
import { createMemDevice } from "../../src/devices/mem/index.ts";
import { Host } from "../../src/engine/host.ts";
import { silentLogger } from "../../src/shared/log.ts";
import { type Daemon, removeDir, run, runResult, skipReason, startDaemon, tempDir } from "../clients/helpers.ts";

const ROOT = resolve(import.meta.dir, "../..");
const CLI = [join(ROOT, "node_modules/.bin/bun"), join(ROOT, "bin/usbd-tui.ts")];
const skip = skipReason("metrics", ["fio", "promtool"]);

/** The value of the sample `name{labels}` in a scrape, or undefined. */
function sample(text: string, name: string, labels: Record<string, string>): number | undefined {
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name}{`)) continue;
    const inside = line.slice(name.length + 1, line.lastIndexOf("}"));
    if (Object.entries(labels).every(([k, v]) => inside.includes(`${k}="${v}"`))) return Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return undefined;
}

describe.skipIf(skip !== undefined)("the Prometheus endpoint of a running daemon", () => {
  let dir: string;
  let daemon: Daemon;
  let url: string;

  beforeAll(async () => {
    dir = tempDir("metrics");
    const control = join(dir, "c.sock");
    daemon = await startDaemon({ devType: "dedup", size: "256MiB", extraArgs: ["--metrics", "tcp:127.0.0.1:0", "--control", control] });
    const status = JSON.parse(await run([...CLI, "ctl", "--control", control, "status", "--json"])) as { daemon: { metrics: string } };
    url = status.daemon.metrics;
  });

  afterAll(async () => {
    await daemon?.stop().catch(() => daemon.kill());
    removeDir(dir);
  });

  test("the counts of a known number of fio requests, by command, and in the latency histogram", async () => {
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:[1-9]\d*\/metrics$/);
    const fio = (rw: string, ios: number) =>
      run(["fio", `--name=${rw}`, "--ioengine=nbd", `--uri=${daemon.uri}`, `--rw=${rw}`, "--bs=4k", "--iodepth=4", "--size=64M", `--number_ios=${ios}`, "--randrepeat=0"]);
    await fio("randwrite", 300);
    await fio("randread", 200);
    const response = await fetch(url);
    expect(response.headers.get("content-type")).toContain("text/plain; version=0.0.4");
    const text = await response.text();
    const device = { device: "usbd" };
    expect(sample(text, "usbd_requests_total", { ...device, command: "write" })).toBe(300);
    expect(sample(text, "usbd_requests_total", { ...device, command: "read" })).toBe(200);
    expect(sample(text, "usbd_request_bytes_total", { ...device, command: "write" })).toBe(300 * 4096);
    expect(sample(text, "usbd_request_duration_seconds_count", { ...device, op: "write" })).toBe(300);
    expect(sample(text, "usbd_request_duration_seconds_bucket", { ...device, op: "read", le: "+Inf" })).toBe(200);
    expect(sample(text, "usbd_requests_in_flight", device)).toBe(0);
    expect(sample(text, "usbd_device_size_bytes", device)).toBe(256 * 1024 * 1024);
    // The dedup device's own gauges.
    expect(sample(text, "usbd_device_dedup_ratio", device)).toBeGreaterThan(0);
    expect(sample(text, "usbd_device_stored_bytes", device)).toBeGreaterThan(0);
  }, 60_000);

  test("promtool check metrics passes on a scrape", async () => {
    const text = await (await fetch(url)).text();
    const file = join(dir, "scrape.txt");
    await Bun.write(file, text);
    const r = await runResult(["sh", "-c", `promtool check metrics < ${file}`]);
    expect(`${r.stdout}${r.stderr}`.trim()).toBe("");
    expect(r.exitCode).toBe(0);
  });

  test("other paths answer 404; a bad --metrics is a usage error", async () => {
    expect((await fetch(url.replace("/metrics", "/"))).status).toBe(404);
    const bad = await runResult([...CLI, "--headless", "--listen", `unix:${join(dir, "x.sock")}`, "--metrics", "0.0.0.0"]);
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr).toContain("--metrics takes tcp:HOST:PORT");
  });
});

describe("the exposition format", () => {
  test("label values are escaped, histogram buckets are cumulative and end at +Inf", () => {
    const host = new Host(silentLogger);
    host.add('odd"name\\', createMemDevice({ size: 1 << 20 }));
    const d = host.list()[0]!;
    for (const micros of [3, 50, 50, 900, 2_000_000]) {
      const started = d.metrics.begin(performance.now() - micros / 1000);
      d.metrics.end(0, 4096, started, true);
    }
    const text = renderPrometheus({ version: "1", startedAt: 0, devices: [{ snapshot: host.snapshot()[0]!, latency: d.metrics.latencyHistograms() }] });
    expect(text).toContain('device="odd\\"name\\\\"');
    const buckets = text.split("\n").filter((l) => l.startsWith("usbd_request_duration_seconds_bucket") && l.includes('op="read"')).map((l) => Number(l.split(" ").at(-1)));
    expect(buckets).toEqual([...buckets].sort((a, b) => a - b));
    expect(buckets.at(-1)).toBe(5);
    // Four requests well under a second, one of 2 s (each measured from its start to now, so a little longer).
    expect(text).toMatch(/usbd_request_duration_seconds_bucket\{[^}]*op="read",le="1\.048576"\} 4\n/);
    expect(text).toMatch(/usbd_request_duration_seconds_bucket\{[^}]*op="read",le="4\.194304"\} 5\n/);
  });
});
