// The dedup device: the shared conformance suite (with reopen, with and without lz4), then what is special to it.
import { afterAll, describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { checkDedupStore } from "../../src/devices/dedup/check.ts";
import { openDedupDevice, type DedupCompression, type DedupDevice, type DedupDeviceOptions } from "../../src/devices/dedup/index.ts";
import { expectSameBytes, isAllZero } from "../conformance/helpers.ts";
import { MiB, pattern, runConformance } from "../conformance/index.ts";
import { gauge, randomBytes } from "./dedup-helpers.ts";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "usbd-dedup-"));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

let count = 0;
for (const compression of ["lz4", "none"] as DedupCompression[]) {
  let name = "";
  await runConformance(`dedup (${compression})`, {
    create() {
      name = `conformance-${compression}-${count++}`;
      // lz4 stores hash large writes on a worker thread, as the daemon does on two cores; the others inline.
      return openDedupDevice({ storeDir: dir, storeName: name, size: 64 * MiB, compression, hashOffThread: compression === "lz4" });
    },
    reopen: () => openDedupDevice({ storeDir: dir, storeName: name, compression, hashOffThread: compression === "lz4" }),
    cleanup() {
      // Every conformance test doubles as a consistency test: whatever it did, the closed store must check clean.
      expect(checkDedupStore({ storeDir: dir, storeName: name }).problems).toEqual([]);
      for (const f of fs.readdirSync(dir)) if (f.startsWith(`${name}.`)) fs.rmSync(path.join(dir, f));
    },
  });
}

/** A fresh store in its own name; returns the device and a way to reopen it. */
let stores = 0;
function fresh(options: { size?: number; compression?: DedupCompression; memoryCache?: number } = {}) {
  const name = `store-${stores++}`;
  const open = (more: Partial<DedupDeviceOptions> = {}) =>
    openDedupDevice({ storeDir: dir, storeName: name, size: options.size ?? 512 * MiB, compression: options.compression, memoryCache: options.memoryCache, ...more });
  return { name, dev: open(), open, blocksFile: path.join(dir, `${name}.dedup.blocks`), dbFile: path.join(dir, `${name}.dedup.db`) };
}

/** Writes `data` at `offset` in 1 MiB requests, as a client would. */
function writeAll(dev: DedupDevice, offset: number, data: Uint8Array): void {
  for (let done = 0; done < data.length; done += MiB) dev.write(offset + done, data.subarray(done, Math.min(done + MiB, data.length)));
}

const allocated = (file: string): number => fs.statSync(file).blocks * 512;

describe("dedup: space", () => {
  test("the same 64 MiB of random data at four offsets is stored once", () => {
    const { dev, blocksFile } = fresh();
    const data = randomBytes(64 * MiB);
    for (const at of [0, 100 * MiB, 200 * MiB, 448 * MiB]) writeAll(dev, at, data);
    dev.flush();
    expect(allocated(blocksFile)).toBeLessThan(70 * MiB);
    expect(gauge(dev, "unique blocks")).toBe(16384);
    expect(gauge(dev, "logical in use")).toBe(256 * MiB);
    expect(gauge(dev, "dedup ratio")).toBe(4);
    expectSameBytes(dev.read(448 * MiB + 12345, 3 * MiB).slice(), data.subarray(12345, 12345 + 3 * MiB), "fourth copy");
    dev.close();
  });

  test("compressible data is stored smaller than its size; incompressible data is stored raw", () => {
    const { dev } = fresh();
    const text = new TextEncoder().encode(Array.from({ length: 400_000 }, (_, i) => `line ${i} of a log file\n`).join("")).subarray(0, 8 * MiB);
    writeAll(dev, 0, text);
    dev.flush();
    expect(gauge(dev, "stored")).toBeLessThan(text.length / 2);
    expect(gauge(dev, "compression ratio")).toBeGreaterThan(2);
    expectSameBytes(dev.read(0, text.length).slice(), text, "compressible data");
    dev.close();
    const raw = fresh({ compression: "none" });
    writeAll(raw.dev, 0, text);
    expect(gauge(raw.dev, "compression ratio")).toBe(1);
    raw.dev.close();
  });

  test("blocks that are half random, half repeated still compress (the skip for random-looking data does not catch them)", () => {
    const { dev } = fresh();
    const data = new Uint8Array(4 * MiB);
    for (let at = 0; at < data.length; at += 4096) crypto.getRandomValues(data.subarray(at, at + 2048));
    writeAll(dev, 0, data);
    expect(gauge(dev, "compression ratio")).toBeGreaterThan(1.3);
    expectSameBytes(dev.read(0, data.length).slice(), data, "half-random blocks");
    dev.close();
  });

  test("zeros store nothing", () => {
    const { dev, blocksFile } = fresh();
    writeAll(dev, 0, new Uint8Array(32 * MiB));
    dev.writeZeroes(64 * MiB, 32 * MiB);
    dev.flush();
    expect(gauge(dev, "unique blocks")).toBe(0);
    expect(gauge(dev, "logical in use")).toBe(0);
    expect(allocated(blocksFile)).toBe(0);
    expect(dev.extents(0, 128 * MiB)).toEqual([{ length: 128 * MiB, hole: true, zero: true }]);
    dev.close();
  });

  test("overwrite and trim reclaim: blocks in use fall to zero and new writes reuse the space", () => {
    const { dev, blocksFile } = fresh();
    writeAll(dev, 0, randomBytes(32 * MiB));
    dev.flush();
    const span = fs.statSync(blocksFile).size;
    writeAll(dev, 0, randomBytes(32 * MiB));
    // The old blocks are still what the last commit refers to: reclaimable, not yet reusable.
    expect(gauge(dev, "reclaimable blocks")).toBe(8192);
    dev.flush();
    expect(gauge(dev, "reclaimable blocks")).toBe(0);
    expect(gauge(dev, "unique blocks")).toBe(8192);
    dev.trim(0, 32 * MiB);
    dev.flush();
    expect(gauge(dev, "unique blocks")).toBe(0);
    expect(gauge(dev, "stored")).toBe(0);
    // Emptied chunks are punched out of the blocks file.
    expect(allocated(blocksFile)).toBeLessThan(MiB);
    for (let round = 0; round < 3; round++) {
      writeAll(dev, 0, randomBytes(32 * MiB));
      dev.flush();
    }
    expect(fs.statSync(blocksFile).size).toBeLessThanOrEqual(2 * span);
    expect(gauge(dev, "unique blocks")).toBe(8192);
    dev.close();
  });

  test("a partial write to a block shared by several addresses changes only that address", () => {
    const { dev } = fresh();
    const block = pattern(4096, 9);
    for (let i = 0; i < 4; i++) dev.write(i * 4096, block);
    dev.write(2 * 4096 + 100, new Uint8Array([0xaa, 0xbb]));
    for (const i of [0, 1, 3]) expectSameBytes(dev.read(i * 4096, 4096).slice(), block, `block ${i}`);
    const changed = block.slice();
    changed.set([0xaa, 0xbb], 100);
    expectSameBytes(dev.read(2 * 4096, 4096).slice(), changed, "the written block");
    // The partial write is held for coalescing until the flush stores it as a block of its own.
    dev.flush();
    expect(gauge(dev, "unique blocks")).toBe(2);
    dev.close();
  });

  test("--dedup-memcache bounds the cache: dirty state beyond it is committed early, and data stays right", () => {
    const { dev, open } = fresh({ memoryCache: MiB });
    const data = randomBytes(48 * MiB);
    writeAll(dev, 0, data);
    expect(gauge(dev, "memory cache")).toBeLessThanOrEqual(MiB);
    expectSameBytes(dev.read(0, data.length).slice(), data, "data under a small cache");
    dev.close();
    const again = open({ memoryCache: MiB });
    expectSameBytes(again.read(0, data.length).slice(), data, "data after reopen");
    again.close();
    // Reads fill the caches too: map pages, and decoded blocks of compressible data.
    const text = fresh({ memoryCache: MiB });
    const lines = new TextEncoder().encode(Array.from({ length: 2_000_000 }, (_, i) => `record ${i}\n`).join("")).subarray(0, 16 * MiB);
    writeAll(text.dev, 0, lines);
    text.dev.close();
    const reader = text.open({ memoryCache: MiB });
    for (let at = 0; at < lines.length; at += 4096) reader.read(at, 4096);
    expect(gauge(reader, "memory cache")).toBeLessThanOrEqual(MiB);
    reader.close();
  });
});

describe("dedup: opening stores", () => {
  test("reopening resumes the volume without repeating size or block size; another compression setting is fine", () => {
    const { dev, open } = fresh({ size: 64 * MiB });
    const data = pattern(3 * 4096 + 17, 5);
    dev.write(8191, data);
    dev.close();
    const again = open({ size: undefined, compression: "none" });
    expect(again.size).toBe(64 * MiB);
    expect(again.blockSize).toBe(4096);
    expectSameBytes(again.read(8191, data.length).slice(), data, "after reopen");
    again.close();
  });

  test("a different block size or size is refused, naming both", () => {
    const { dev, open } = fresh({ size: 64 * MiB });
    dev.close();
    expect(() => open({ blockSize: 8192 })).toThrow(/uses 4096-byte blocks but --dedup-blocksize asks for 8192/);
    expect(() => open({ size: 128 * MiB })).toThrow(/is 67108864 bytes but --store-size asks for 134217728/);
  });

  test("a missing part of the store is a clear error, and nothing is created in its place", () => {
    for (const missing of ["db", "blocks"] as const) {
      const store = fresh({ size: 64 * MiB });
      store.dev.close();
      const gone = missing === "db" ? store.dbFile : store.blocksFile;
      fs.rmSync(gone);
      expect(() => store.open()).toThrow(/exists but .* is missing; the store is incomplete/);
      expect(fs.existsSync(gone)).toBe(false);
    }
  });

  test("a new store needs a size; a second opener of a store in use is refused", () => {
    expect(() => openDedupDevice({ storeDir: dir, storeName: "never-created" })).toThrow(/pass --store-size to create it/);
    expect(fs.existsSync(path.join(dir, "never-created.dedup.db"))).toBe(false);
    const { dev, open } = fresh({ size: 64 * MiB });
    expect(() => open()).toThrow(/locked by another process/);
    dev.close();
    open().close();
  });

  test("store files are private (0600)", () => {
    const { dev, dbFile, blocksFile } = fresh({ size: 64 * MiB });
    dev.close();
    expect(fs.statSync(dbFile).mode & 0o777).toBe(0o600);
    expect(fs.statSync(blocksFile).mode & 0o777).toBe(0o600);
  });

  test("a block size other than 4 KiB works end to end", () => {
    const { dev, open } = fresh({ size: 64 * MiB });
    dev.close();
    const name = `store-${stores++}`;
    const big = openDedupDevice({ storeDir: dir, storeName: name, size: 64 * MiB, blockSize: 65536 });
    const data = pattern(200_000, 3);
    big.write(70_000, data);
    big.write(70_000 + 400_000, data);
    big.flush();
    expect(big.blockSize).toBe(65536);
    expectSameBytes(big.read(70_000 + 400_000, data.length).slice(), data, "64 KiB blocks");
    big.close();
    expect(checkDedupStore({ storeDir: dir, storeName: name }).problems).toEqual([]);
    open().close();
  });
});

describe("dedup: check and repair", () => {
  /** A closed store with shared and compressible blocks, and the data it holds. */
  function populated() {
    const store = fresh({ size: 64 * MiB });
    const shared = pattern(4096, 77);
    for (let i = 0; i < 8; i++) store.dev.write(i * 4096, shared);
    const text = new TextEncoder().encode("compressible ".repeat(2000)).subarray(0, 16384);
    store.dev.write(1 * MiB, text);
    store.dev.write(2 * MiB, pattern(64 * 1024, 78));
    store.dev.close();
    return store;
  }

  test("a clean store checks clean", () => {
    const { name } = populated();
    const report = checkDedupStore({ storeDir: dir, storeName: name });
    expect(report).toMatchObject({ problems: [], problemCount: 0, lostBlocks: 0, repaired: false });
    expect(report.references).toBe(8 + 4 + 16);
  });

  test("a wrong refcount is found, repaired, and the store is clean afterwards", () => {
    const { name, dbFile } = populated();
    const db = new Database(dbFile);
    db.exec("UPDATE blocks SET refs = refs + 5 WHERE refs = 8");
    db.close();
    const found = checkDedupStore({ storeDir: dir, storeName: name });
    expect(found.problems).toEqual([expect.stringMatching(/refcount 13 but 8 references/)]);
    expect(checkDedupStore({ storeDir: dir, storeName: name, repair: true }).repaired).toBe(true);
    expect(checkDedupStore({ storeDir: dir, storeName: name }).problems).toEqual([]);
  });

  test("an overwritten block is found by its hash; repair clears the addresses that used it and keeps the rest", () => {
    const { name, blocksFile, open } = populated();
    const db = new Database(dbFile(name), { readonly: true });
    const slot = (db.query("SELECT slot FROM blocks WHERE refs = 8").get() as { slot: number }).slot;
    db.close();
    const fd = fs.openSync(blocksFile, "r+");
    fs.writeSync(fd, new Uint8Array(16).fill(0x55), 0, 16, slot * 512 + 100);
    fs.closeSync(fd);
    const found = checkDedupStore({ storeDir: dir, storeName: name });
    expect(found.problems[0]).toMatch(/content does not match its SHA-256/);
    expect(found.lostBlocks).toBe(8);
    const repaired = checkDedupStore({ storeDir: dir, storeName: name, repair: true });
    expect(repaired).toMatchObject({ repaired: true, lostBlocks: 8 });
    expect(checkDedupStore({ storeDir: dir, storeName: name }).problems).toEqual([]);
    const dev = open({ size: undefined });
    expect(isAllZero(dev.read(0, 8 * 4096))).toBe(true);
    expect(isAllZero(dev.read(1 * MiB, 16384))).toBe(false);
    dev.close();
  });
});

function dbFile(name: string): string {
  return path.join(dir, `${name}.dedup.db`);
}

describe("dedup: failures lose nothing silently", () => {
  test("a blocks file cut short reads as EIO, never as zeros, and check names the damage", () => {
    const { dev, open, name, blocksFile } = fresh({ size: 64 * MiB });
    dev.write(0, pattern(64 * 1024, 21));
    dev.close();
    fs.truncateSync(blocksFile, 32 * 1024);
    const again = open({ size: undefined });
    expect(() => again.read(0, 64 * 1024)).toThrow(expect.objectContaining({ code: "EIO", message: expect.stringMatching(/corrupt .*the file ends at byte/) }));
    expect(again.read(0, 4096).length).toBe(4096);
    again.close();
    expect(checkDedupStore({ storeDir: dir, storeName: name }).lostBlocks).toBe(8);
  });

  test("after a failed fsync every later write and flush fails (a retried fsync could succeed without the data)", () => {
    const { dev } = fresh({ size: 64 * MiB });
    dev.write(0, pattern(8192, 22));
    // Injected: no real filesystem here fails fsync on demand. This stands in for the disk reporting EIO.
    const internals = dev as unknown as { file: { sync(): void } };
    internals.file.sync = () => {
      throw Object.assign(new Error("EIO: i/o error, fdatasync"), { code: "EIO" });
    };
    expect(() => dev.flush()).toThrow(expect.objectContaining({ code: "EIO" }));
    expect(() => dev.write(0, pattern(4096, 23))).toThrow(/writes since the last flush may be lost, restart the daemon/);
    expect(() => dev.flush()).toThrow(/restart the daemon/);
    expect(dev.read(0, 8192).length).toBe(8192);
    expect(dev.stats().lastError).toContain("fdatasync");
    expect(() => dev.close()).toThrow(/restart the daemon/);
  });
});
