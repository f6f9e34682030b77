// The Host owns what the faces show: the running action and how long it has run, the sticky last error, the
// clients of each export, numbered events kept for late viewers, and device log lines as events with the device's name.
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import type { BlockDevice } from "../../src/devices/device.ts";
import { DeviceError } from "../../src/devices/device.ts";
import { createMemDevice } from "../../src/devices/mem/index.ts";
import { Host, type HostEvent } from "../../src/engine/host.ts";
import { type Logger, silentLogger } from "../../src/shared/log.ts";
import { removeDir, run, tempDir } from "../clients/helpers.ts";

const MiB = 1024 * 1024;

/** A mem device whose flush fails while `failing` says so (a real disk cannot fail on cue). */
function flaky(): { device: BlockDevice; failing: { value: boolean } } {
  const mem = createMemDevice({ size: 4 * MiB });
  const failing = { value: true };
  const device: BlockDevice = Object.assign(Object.create(mem) as BlockDevice, {
    kind: "flaky",
    flush: () => {
      if (failing.value) throw new DeviceError("EIO", "disk on fire");
      return mem.flush();
    },
  });
  return { device, failing };
}

describe("the Host's state of each device", () => {
  test("a failed flush is the device's error until a flush succeeds; the events say both, numbered in order", async () => {
    const host = new Host(silentLogger);
    const { device, failing } = flaky();
    host.add("f", device);
    await expect(host.flush("f")).rejects.toThrow("disk on fire");
    expect(host.snapshot()[0]!.lastError).toBe("flush failed: disk on fire");
    failing.value = false;
    await host.flush("f");
    expect(host.snapshot()[0]!.lastError).toBeUndefined();
    const events = host.recentEvents();
    expect(events.map((e) => [e.kind, e.level])).toEqual([
      ["error", "error"],
      ["flushed", "info"],
    ]);
    expect(events[1]!.seq).toBe(events[0]!.seq + 1);
    expect(host.recentEvents(events[0]!.seq).map((e) => e.kind)).toEqual(["flushed"]);
  });

  test("a running action shows with its elapsed time, and a second action on the same device is refused", async () => {
    const mem = createMemDevice({ size: 4 * MiB });
    let release: () => void = () => undefined;
    const held = new Promise<void>((resolve) => (release = resolve));
    const slow = Object.assign(Object.create(mem) as BlockDevice, { flush: () => held });
    const host = new Host(silentLogger);
    host.add("s", slow);
    const flushing = host.flush("s");
    await Bun.sleep(30);
    const during = host.snapshot()[0]!;
    expect(during.state).toBe("flushing");
    expect(during.activity?.label).toBe("flushing");
    expect(during.activity!.elapsedMs).toBeGreaterThanOrEqual(20);
    await expect(host.trim("s")).rejects.toThrow("s is flushing; try again once that is done");
    release();
    await flushing;
    expect(host.snapshot()[0]!.activity).toBeUndefined();
    expect(host.snapshot()[0]!.state).toBe("starting");
  });

  test("a snapshot goes to a device that takes them, with an event; one that takes none is refused by name", async () => {
    const host = new Host(silentLogger);
    const taken: string[] = [];
    const mem = createMemDevice({ size: 4 * MiB });
    const snapshotting: BlockDevice = Object.assign(Object.create(mem) as BlockDevice, {
      kind: "snappy",
      createSnapshot: async (name: string) => {
        taken.push(name);
        return { name, createdAt: "2026-12-03T07:00:00.000Z" };
      },
    });
    host.add("s", snapshotting);
    host.add("m", createMemDevice({ size: 4 * MiB }));
    expect(await host.createSnapshot("s", "monday")).toEqual({ name: "monday", createdAt: "2026-12-03T07:00:00.000Z" });
    expect(taken).toEqual(["monday"]);
    expect(host.recentEvents().at(-1)).toMatchObject({ device: "s", kind: "snapshot", message: "snapshot monday created (2026-12-03T07:00:00.000Z)" });
    await expect(host.createSnapshot("m", "monday")).rejects.toThrow("m is a mem device, which takes no snapshots (objstore volumes do)");
    await expect(host.createSnapshot("nosuch", "monday")).rejects.toThrow('no device named "nosuch"');
    await host.stop({ force: true });
  });

  test("a device's warnings logged through its logger become its events; its log lines carry its name", () => {
    const lines: Array<{ message: string; fields: unknown }> = [];
    const log: Logger = { log: (_level, message, fields) => void lines.push({ message, fields }) };
    const host = new Host(log);
    const seen: HostEvent[] = [];
    host.subscribe((e) => seen.push(e));
    host.deviceLog("vol").log("warn", "objstore: something slow", { error: "timeout after 5 s" });
    host.deviceLog("vol").log("info", "objstore: nothing to see");
    expect(seen.map((e) => [e.device, e.kind, e.message])).toEqual([["vol", "warning", "objstore: something slow: timeout after 5 s"]]);
    expect(lines.map((l) => l.fields)).toEqual([{ device: "vol", error: "timeout after 5 s" }, { device: "vol" }]);
  });

  test("a client of a network export is listed with its process, and its connect and disconnect are events", async () => {
    const dir = tempDir("host-clients");
    const host = new Host(silentLogger);
    const a = host.add("a", createMemDevice({ size: 4 * MiB }));
    try {
      await host.serve({ kind: "unix", path: join(dir, "s.sock") }, [a]);
      const client = Bun.spawn(["qemu-io", "-f", "raw", "-c", "sleep 20000", `nbd+unix:///a?socket=${join(dir, "s.sock")}`], { stdout: "ignore", stderr: "ignore" });
      const deadline = Date.now() + 10_000;
      while (host.snapshot()[0]!.clients.length === 0 && Date.now() < deadline) await Bun.sleep(20);
      expect(host.snapshot()[0]!.clients[0]!.process).toBe(`qemu-io (pid ${client.pid})`);
      client.kill("SIGKILL");
      await client.exited;
      while (host.snapshot()[0]!.clients.length > 0 && Date.now() < deadline) await Bun.sleep(20);
      expect(host.recentEvents().map((e) => e.kind)).toEqual(["attached", "connected", "disconnected"]);
      await run(["nbdinfo", "--size", `nbd+unix:///a?socket=${join(dir, "s.sock")}`]);
    } finally {
      await host.stop({ force: true });
      removeDir(dir);
    }
  });
});
