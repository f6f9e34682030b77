/**
 * Host.detach of a network export and Host.trim, with real parts: the Host serving on a Unix socket, libnbd clients
 * (nbdinfo, fio's nbd engine, qemu-io) and the repo's raw NBD client for requests held in flight, the dedup device
 * on a real store. The kernel half of trim (fstrim on a mounted /dev/nbdX) is in tests/vm/ext4.vm.ts.
 */
import { afterEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import { existsSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openDedupDevice } from "../../src/devices/dedup/index.ts";
import type { BlockDevice } from "../../src/devices/device.ts";
import { createMemDevice } from "../../src/devices/mem/index.ts";
import { parseFstrimBytes } from "../../src/engine/fstrim.ts";
import { Host, type HostEvent } from "../../src/engine/host.ts";
import { silentLogger } from "../../src/shared/log.ts";
import { missingBinaries, runResult } from "../clients/helpers.ts";
import { later, wrapDevice } from "../protocol/harness.ts";
import { CMD, openExport, pattern } from "../protocol/raw-client.ts";

setDefaultTimeout(60_000);

const MiB = 1024 * 1024;
const cleanups: Array<() => Promise<void> | void> = [];

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "usbd-host-"));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A host whose events are recorded, stopped (if a test has not) after the test. */
function newHost(): { host: Host; events: HostEvent[] } {
  const host = new Host(silentLogger);
  const events: HostEvent[] = [];
  host.subscribe((e) => events.push(e));
  cleanups.push(() => host.stop({ force: true }).catch(() => {}));
  return { host, events };
}

/** A mem device whose reads take `delay.ms` while it is above 0, counting reads started meanwhile. */
function delayedMem(size: number): { device: BlockDevice; delay: { ms: number; started: number } } {
  const inner = createMemDevice({ size });
  const delay = { ms: 0, started: 0 };
  const device = wrapDevice(inner, {
    read: (offset, length) => {
      if (delay.ms === 0) return inner.read(offset, length);
      delay.started++;
      return later(delay.ms, () => inner.read(offset, length).slice());
    },
  });
  return { device, delay };
}

async function until(what: string, condition: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`${what}: not reached within ${timeoutMs} ms`);
    await Bun.sleep(5);
  }
}

async function listedExports(socket: string): Promise<string[]> {
  const r = await runResult(["nbdinfo", "--list", "--json", `nbd+unix:///?socket=${socket}`], { timeoutMs: 20_000 });
  if (r.exitCode !== 0) throw new Error(`nbdinfo --list failed: ${r.stderr}`);
  return (JSON.parse(r.stdout).exports as Array<{ "export-name": string }>).map((e) => e["export-name"]).sort();
}

const clientsMissing = missingBinaries(["nbdinfo", "fio", "qemu-io"]);

// Skipped, naming what is missing, where the libnbd clients are not installed (scripts/install-deps.sh installs them).
describe.skipIf(clientsMissing.length > 0)(`Host.detach of a network export${clientsMissing.length > 0 ? ` (missing: ${clientsMissing.join(", ")})` : ""}`, () => {
  test("withdraws b while a client does I/O on it: in-flight requests answered, clients cut off, b unlisted and unreachable; a untouched; stop() removes the socket", async () => {
    const dir = tempDir();
    const socket = join(dir, "nbd.sock");
    const { host, events } = newHost();
    const a = host.add("a", createMemDevice({ size: 64 * MiB }));
    const slow = delayedMem(64 * MiB);
    const b = host.add("b", slow.device);
    await host.serve({ kind: "unix", path: socket }, [a, b]);
    expect(await listedExports(socket)).toEqual(["a", "b"]);

    // A libnbd client (fio's nbd engine) doing random I/O on b for far longer than the test lasts.
    const job = join(dir, "b.fio");
    await Bun.write(
      job,
      `[b]\nioengine=nbd\nuri=nbd+unix:///b?socket=${socket}\nrw=randrw\nbs=4k\niodepth=4\nsize=32m\ntime_based=1\nruntime=120\n`,
    );
    const fio = Bun.spawn(["fio", job], { stdout: "pipe", stderr: "pipe", cwd: dir });
    cleanups.push(() => {
      fio.kill("SIGKILL");
    });
    await until("fio doing I/O on b", () => b.metrics.snapshot().totals.write!.ops > 100 && b.metrics.snapshot().totals.read!.ops > 100);
    expect(a.metrics.snapshot().totals.write!.ops).toBe(0);

    // Our own client on b with three reads held in flight by the device.
    const raw = await openExport(socket, { exportName: "b" });
    await raw.write(5 * MiB, pattern(8192, 4));
    slow.delay.ms = 300;
    const startedBefore = slow.delay.started;
    const handles = raw.send(
      { type: CMD.READ, offset: 5 * MiB, length: 8192 },
      { type: CMD.READ, offset: 5 * MiB + 100, length: 1000 },
      { type: CMD.READ, offset: 5 * MiB + 4096, length: 4096 },
    );
    await until("the three reads reaching the device", () => slow.delay.started >= startedBefore + 3);

    const detaching = host.detach("b");
    expect(b.state).toBe("detaching");
    const got = await raw.collect(handles);
    const written = pattern(8192, 4);
    expect(got.get(handles[0]!)![0]!.data).toEqual(written);
    expect(got.get(handles[1]!)![0]!.data).toEqual(written.subarray(100, 1100));
    expect(got.get(handles[2]!)![0]!.data).toEqual(written.subarray(4096, 8192));
    await raw.raw.waitClosed();
    await detaching;

    expect(b.state).toBe("detached");
    const detached = events.filter((e) => e.device === "b" && e.kind === "detached");
    expect(detached).toHaveLength(1);
    expect(detached[0]!.message).toBe(`withdrawn from nbd+unix:///b?socket=${socket}, flushed and closed`);
    expect(() => slow.device.read(0, 512)).toThrow(/closed/);

    // fio lost its server long before its 120 s run: it ends, and with an error.
    const fioExit = await Promise.race([fio.exited, Bun.sleep(20_000).then(() => "still running" as const)]);
    expect(fioExit).not.toBe("still running");
    expect(fioExit).not.toBe(0);

    // New clients: the list has a alone, b cannot be opened.
    expect(await listedExports(socket)).toEqual(["a"]);
    const probe = await runResult(["nbdinfo", `nbd+unix:///b?socket=${socket}`], { timeoutMs: 20_000 });
    expect(probe.exitCode).not.toBe(0);
    expect(probe.stderr).toContain("server replied with error to opt_go request");

    // a is fully usable through a real client: write, read back, verify.
    const io = await runResult(
      ["qemu-io", "-f", "raw", "-c", "write -P 0x5a 1M 4M", "-c", "read -P 0x5a 1M 4M", "-c", "flush", `nbd+unix:///a?socket=${socket}`],
      { timeoutMs: 30_000 },
    );
    expect(io.exitCode).toBe(0);
    expect(`${io.stdout}${io.stderr}`).not.toMatch(/fail|error/i);
    expect(a.state).toBe("serving");
    expect(a.metrics.snapshot().totals.write!.ops).toBeGreaterThan(0);

    // Detaching again is a clear error; stop() skips b, closes a and removes the socket.
    await expect(host.detach("b")).rejects.toThrow("b is already detached");
    await host.stop();
    expect(a.state).toBe("detached");
    expect(existsSync(socket)).toBe(false);
    expect(events.filter((e) => e.kind === "error")).toEqual([]);
  });

  test("the default export moves to the next one, and a device that was never served cannot be detached", async () => {
    const dir = tempDir();
    const socket = join(dir, "nbd.sock");
    const { host } = newHost();
    const first = host.add("first", createMemDevice({ size: 8 * MiB }));
    const second = host.add("second", createMemDevice({ size: 16 * MiB }));
    host.add("idle", createMemDevice({ size: 8 * MiB }));
    await host.serve({ kind: "unix", path: socket }, [first, second]);
    await host.detach("first");
    const r = await runResult(["nbdinfo", "--json", `nbd+unix:///?socket=${socket}`], { timeoutMs: 20_000 });
    expect(r.exitCode).toBe(0);
    expect(JSON.parse(r.stdout).exports[0]["export-size"]).toBe(16 * MiB);
    await expect(host.detach("idle")).rejects.toThrow("idle is not served");
    await expect(host.detach("nope")).rejects.toThrow('no device named "nope"');
    await host.stop();
    expect(existsSync(socket)).toBe(false);
  });
});

describe("Host.trim", () => {
  test("dedup: reclaim frees the slots of blocks trimmed since the last commit and the blocks file shrinks", async () => {
    const dir = tempDir();
    const socket = join(dir, "nbd.sock");
    const { host, events } = newHost();
    const device = openDedupDevice({ storeDir: dir, storeName: "d", size: 64 * MiB, compression: "none" });
    const hosted = host.add("d", device);
    await host.serve({ kind: "unix", path: socket }, [hosted]);
    const blocksFile = join(dir, "d.dedup.blocks");
    const gauge = (name: string) => device.stats().gauges.find((g) => g.name === name)!.value;

    // 8 MiB of unique blocks, committed, then all trimmed over NBD without a flush.
    const c = await openExport(socket, { exportName: "d" });
    const data = new Uint8Array(8 * MiB);
    for (let i = 0; i < data.length; i += 65536) crypto.getRandomValues(data.subarray(i, i + 65536));
    for (let off = 0; off < data.length; off += MiB) await c.write(off, data.subarray(off, off + MiB));
    device.flush();
    const trim = await c.request({ type: CMD.TRIM, offset: 0, length: 8 * MiB });
    expect(trim.error).toBe(0);
    const blocks = (8 * MiB) / 4096;
    expect(gauge("reclaimable blocks")).toBe(blocks);
    const allocatedBefore = statSync(blocksFile).blocks * 512;
    expect(allocatedBefore).toBeGreaterThanOrEqual(8 * MiB);

    const result = await host.trim("d");
    expect(result.method).toBe("reclaim");
    expect(result.bytes).toBeGreaterThan(0);
    expect(result.detail).toBe("2,048 blocks freed");
    expect(gauge("reclaimable blocks")).toBe(0);
    const allocatedAfter = statSync(blocksFile).blocks * 512;
    expect(allocatedAfter).toBeLessThan(allocatedBefore);
    expect(result.bytes).toBe(allocatedBefore - allocatedAfter);
    expect(hosted.state).toBe("serving");
    const trimmed = events.filter((e) => e.kind === "trimmed");
    expect(trimmed).toHaveLength(1);
    expect(trimmed[0]!.message).toMatch(/^reclaimed 8 MiB \(2,048 blocks freed\) in [\d.,]+ ms$/);

    // Nothing left: a second reclaim reports so; the device still serves.
    const again = await host.trim("d");
    expect(again).toMatchObject({ method: "reclaim", bytes: 0, detail: "no unreferenced blocks to free" });
    await c.write(0, pattern(4096, 1));
    expect(await c.read(0, 4096)).toEqual(pattern(4096, 1));
    await host.stop();
  });

  test("dedup: the state reads trimming while it runs", async () => {
    const dir = tempDir();
    const { host } = newHost();
    const hosted = host.add("d", openDedupDevice({ storeDir: dir, storeName: "d", size: 16 * MiB }));
    await host.serve({ kind: "unix", path: join(dir, "nbd.sock") }, [hosted]);
    const seen: string[] = [];
    const inner = hosted.device.reclaim!.bind(hosted.device);
    (hosted.device as { reclaim: () => unknown }).reclaim = () => {
      seen.push(hosted.state);
      return inner();
    };
    await host.trim("d");
    expect(seen).toEqual(["trimming"]);
    expect(hosted.state).toBe("serving");
  });

  test("a device without reclaim: nothing to reclaim; a detached device cannot be trimmed; a failing reclaim reports an error", async () => {
    const dir = tempDir();
    const { host, events } = newHost();
    // The wrapper passes on no reclaim, as a device that has none.
    const mem = host.add("m", wrapDevice(createMemDevice({ size: 8 * MiB })));
    const failing = host.add(
      "f",
      wrapDevice(createMemDevice({ size: 8 * MiB }), {
        reclaim: () => {
          throw new Error("the store is unreachable");
        },
      }),
    );
    await host.serve({ kind: "unix", path: join(dir, "nbd.sock") }, [mem, failing]);
    const none = await host.trim("m");
    expect(none).toMatchObject({ method: "none", bytes: 0, detail: "mem releases space as soon as it is trimmed; nothing to reclaim" });
    expect(events.at(-1)).toMatchObject({ device: "m", kind: "trimmed", message: none.detail });

    await expect(host.trim("f")).rejects.toThrow("the store is unreachable");
    expect(events.at(-1)).toMatchObject({ device: "f", kind: "error", message: "trim failed: the store is unreachable" });
    expect(failing.state).toBe("serving");

    await host.detach("m");
    await expect(host.trim("m")).rejects.toThrow("m is detached; there is nothing to trim");
    await host.stop();
  });
});

describe("fstrim output and byte counts", () => {
  test("the byte count comes from fstrim -v's parenthesis, with or without --all's device suffix", () => {
    expect(parseFstrimBytes("/mnt/x: 1.2 GiB (1234567 bytes) trimmed\n")).toBe(1234567);
    expect(parseFstrimBytes("/: 0 B (0 bytes) trimmed on /dev/nbd0\n")).toBe(0);
    expect(parseFstrimBytes("fstrim: /mnt/x: the discard operation is not supported\n")).toBeUndefined();
  });
});
