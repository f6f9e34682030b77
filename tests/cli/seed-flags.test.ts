// The Go original's flag spellings: Go durations and 0 for --objstore-flushevery, 0 for --objstore-concurflush, a
// raw 32-character key, binary single-letter sizes, and a size that is not a multiple of the block size refused as
// a usage error (exit 2) that names the size to give instead.
import { describe, expect, test } from "bun:test";
import { availableParallelism } from "node:os";
import { join, resolve } from "node:path";
import { parseDuration } from "../../src/cli/durations.ts";
import { parseFlags } from "../../src/cli/flags.ts";
import { concurrencyHeuristic } from "../../src/cli/objstore-flags.ts";
import { parseSize } from "../../src/cli/sizes.ts";
import { openObjstoreDevice } from "../../src/devices/objstore/index.ts";
import { removeDir, runResult, tempDir } from "../clients/helpers.ts";

const ROOT = resolve(import.meta.dir, "../..");
const CLI = [join(ROOT, "node_modules/.bin/bun"), join(ROOT, "bin/usbd-tui.ts")];
const MiB = 1024 * 1024;

describe("--objstore-flushevery takes Go durations, and 0 turns timed uploads off", () => {
  test("durations", () => {
    expect(parseDuration("10")).toBe(10);
    expect(parseDuration("2.5s")).toBe(2.5);
    expect(parseDuration("500ms")).toBe(0.5);
    expect(parseDuration("1m")).toBe(60);
    expect(parseDuration("1h30m")).toBe(5400);
    expect(parseDuration("0")).toBe(0);
    expect(parseDuration("0s")).toBe(0);
    expect(parseDuration("1 minute")).toBeUndefined();
    expect(parseFlags(["--objstore-flushevery=1m"]).objstore.flushEvery).toBe(60);
    expect(parseFlags(["-objstore-flushevery", "0"]).objstore.flushEvery).toBe(0);
    expect(() => parseFlags(["--objstore-flushevery=10ms"])).toThrow(/at least 50ms/);
  });

  test("with 0 nothing is uploaded on a timer; reclaim (the dashboard's t) still uploads", async () => {
    const dir = tempDir("flush-zero");
    try {
      const dev = await openObjstoreDevice({ storeDir: dir, storeName: "v", size: 8 * MiB, objectSize: MiB, kind: "local", config: JSON.stringify({ path: join(dir, "objects") }), aesMode: "identity", flushEvery: 0 });
      await dev.write(0, new Uint8Array(MiB).fill(1));
      await Bun.sleep(1500);
      const dirty = () => dev.stats().gauges.find((g) => g.name === "dirty objects")!.value;
      expect(dirty()).toBe(1);
      await dev.reclaim();
      expect(dirty()).toBe(0);
      await dev.close();
    } finally {
      removeDir(dir);
    }
  });
});

describe("--objstore-concurflush=0 picks a number", () => {
  test("4 per core, from 4 to 32", () => {
    expect(concurrencyHeuristic(1)).toBe(4);
    expect(concurrencyHeuristic(2)).toBe(8);
    expect(concurrencyHeuristic(64)).toBe(32);
    expect(parseFlags(["--objstore-concurflush=0"]).objstore.concurrency).toBe(concurrencyHeuristic(availableParallelism()));
  });
});

describe("key: takes the raw 32-character key the Go original took, beside hex and base64", () => {
  test("a volume made with a 32-character key opens with it again, and not with another", async () => {
    const dir = tempDir("raw-key");
    try {
      const options = { storeDir: dir, storeName: "v", kind: "local", config: JSON.stringify({ path: join(dir, "objects") }), aesMode: "aes-gcm" as const };
      const first = await openObjstoreDevice({ ...options, size: 4 * MiB, aesKey: "key:0123456789abcdefghijklmnopqrstuv" });
      await first.write(0, new Uint8Array(4096).fill(9));
      await first.close();
      const again = await openObjstoreDevice({ ...options, aesKey: "key:0123456789abcdefghijklmnopqrstuv" });
      expect((await again.read(0, 4096))[0]).toBe(9);
      await again.close();
      await expect(openObjstoreDevice({ ...options, aesKey: "key:0123456789abcdefghijklmnopqrstuX" })).rejects.toThrow(/wrong key/);
    } finally {
      removeDir(dir);
    }
  });
});

describe("sizes", () => {
  test("single letters are binary, as in qemu-img; KB/MB/GB are decimal", () => {
    expect(parseSize("20G")).toBe(20 * 1024 ** 3);
    expect(parseSize("512K")).toBe(512 * 1024);
    expect(parseSize("20GB")).toBe(20e9);
  });

  test("--store-size=20GB is a usage error (exit 2) that suggests 20GiB and the nearest valid size", async () => {
    const r = await runResult([...CLI, "--headless", "--store-size=20GB", "--listen", "unix:/tmp/never-used.sock"]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr.trim().split("\n").length).toBe(1);
    expect(r.stderr).toContain("--store-size 20GB is 20,000,000,000 bytes, not a multiple of the block size (4 KiB); did you mean 20GiB");
    expect(r.stderr).toContain("the nearest valid size is 20,000,002,048 bytes");
    // The dedup block size counts too.
    expect(() => parseFlags(["--dev-type=dedup", "--dedup-blocksize=64KiB", "--store-size=96KiB"])).toThrow(/not a multiple of the block size \(64 KiB\)/);
  });
});
