/**
 * The dedup device: logical blocks stored once per distinct content (SHA-256), lz4-packed when that saves space,
 * refcounted so overwrite, trim and write-zeroes give space back. Every change is made synchronously, so changes
 * never interleave: writes to one block are ordered and a read sees a block before or after a write, never between.
 * Only a large write may first await its blocks' hashes from a worker thread (off-thread-hasher.ts); it changes
 * nothing until they arrive, and then makes all its changes in one synchronous step, like any other write.
 *
 * Durability: data goes to the blocks file as it is written; the map and the index change in memory. FLUSH (and
 * FUA) syncs the blocks file, then commits map and index in one sqlite transaction. A crash therefore returns to the
 * last commit, whose map refers only to blocks synced before it, in slots nothing has reused since (see
 * block-index.ts). Writes smaller than a block are coalesced in memory first (partial-blocks.ts); every commit
 * stores those blocks before it syncs, so it still covers every write acknowledged before it.
 */
import {
  DeviceError,
  checkOpen,
  checkRange,
  type BlockDevice,
  type DeviceCapabilities,
  type DeviceGauge,
  type DeviceStats,
  type Extent,
  type ReclaimResult,
  type WriteOptions,
} from "../device.ts";
import type { BlockFile } from "./block-file.ts";
import { BlockIndex } from "./block-index.ts";
import { BlockRunWriter } from "./block-run.ts";
import type { Catalog } from "./catalog.ts";
import { UNITS_PER_BLOCK, slotOf, unitsOf, type DedupCompression } from "./layout.ts";
import { MapPages } from "./map-pages.ts";
import { DecodedCache } from "./decoded-cache.ts";
import { PartialBlocks } from "./partial-blocks.ts";
import { OffThreadHasher, type BlockHashes } from "./off-thread-hasher.ts";
import { SlotAllocator } from "./allocator.ts";
import { ioError } from "../io-error.ts";
import { refuseIfReadOnly } from "../read-only.ts";

/** Reads up to this size go into a reused buffer (the contract lets a result be a view valid until consumed). */
const SCRATCH_MAX = 4 << 20;
/** Blocks per run handed to the run writer (bounds its temporary state for huge writes). */
const MAX_RUN_BLOCKS = 1024;
/** extents() looks at most this many blocks per call (the contract allows answering for a prefix). */
const MAX_EXTENT_BLOCKS = 1 << 20;
/** Memory for blocks being rewritten piecewise (see partial-blocks.ts); at least 16 blocks. */
const PARTIAL_BYTES = 1 << 20;

export interface DedupParts {
  readonly size: number;
  readonly blockSize: number;
  readonly compression: DedupCompression;
  readonly memoryCache: number;
  readonly catalog: Catalog;
  readonly file: BlockFile;
  readonly allocator: SlotAllocator;
  /** Opened with --read-only: writes are refused and nothing is ever committed. */
  readonly readOnly?: boolean;
  /** Hash large writes on the shared worker pool (worth it only with a second core to run it). */
  readonly hashOffThread?: boolean;
}

export class DedupDevice implements BlockDevice {
  readonly kind = "dedup";
  readonly size: number;
  readonly blockSize: number;
  readonly capabilities: DeviceCapabilities;
  private readonly readOnly: boolean;
  private readonly compression: DedupCompression;
  private readonly memoryCache: number;
  private readonly catalog: Catalog;
  private readonly file: BlockFile;
  private readonly allocator: SlotAllocator;
  private readonly map: MapPages;
  private readonly index: BlockIndex;
  private readonly zero: Buffer;
  private readonly partials: PartialBlocks;
  private readonly hasher: OffThreadHasher | undefined;
  private readonly runs: BlockRunWriter;
  private readonly decoded: DecodedCache;
  private scratch = Buffer.alloc(64 * 1024);
  private closed = false;
  private lastError: string | undefined;
  /**
   * Set when syncing the blocks file failed. After a failed fsync the kernel may have dropped the dirty pages and a
   * later fsync can succeed without them, so no later commit could be trusted: writes and flushes fail from then on.
   */
  private syncFailure: string | undefined;

  constructor(parts: DedupParts) {
    this.readOnly = parts.readOnly === true;
    this.capabilities = { fua: true, trim: true, fastZero: true, multiConn: true, persistent: true, readOnly: this.readOnly };
    this.size = parts.size;
    this.blockSize = parts.blockSize;
    this.compression = parts.compression;
    this.memoryCache = parts.memoryCache;
    this.catalog = parts.catalog;
    this.file = parts.file;
    this.allocator = parts.allocator;
    this.map = new MapPages(this.catalog);
    this.index = new BlockIndex(this.catalog, (slot, units) => this.releaseSlot(slot, units));
    this.zero = Buffer.alloc(this.blockSize);
    this.decoded = new DecodedCache(this.blockSize);
    this.runs = new BlockRunWriter({
      blockSize: this.blockSize,
      compression: this.compression,
      file: this.file,
      index: this.index,
      map: this.map,
      allocator: this.allocator,
      zero: this.zero,
      releaseSlot: (slot, units) => this.releaseSlot(slot, units),
    });
    this.hasher = parts.hashOffThread === true && !this.readOnly ? new OffThreadHasher(this.blockSize) : undefined;
    this.partials = new PartialBlocks({
      blockSize: this.blockSize,
      limit: Math.max(16, PARTIAL_BYTES / this.blockSize),
      load: (block, into) => this.blockContent(block, into),
      store: (first, data) => this.store(first, data),
    });
  }

  read(offset: number, length: number): Uint8Array {
    checkOpen(this.closed, this.kind);
    checkRange(this.size, offset, length);
    const out = this.readBuffer(length);
    const bs = this.blockSize;
    const end = offset + length;
    let pos = offset;
    while (pos < end) {
      const block = Math.floor(pos / bs);
      const from = pos - block * bs;
      const n = Math.min(bs - from, end - pos);
      const entry = this.map.get(block);
      const held = this.partials.content(block);
      if (held !== undefined) {
        out.set(held.subarray(from, from + n), pos - offset);
      } else if (entry === 0) {
        out.fill(0, pos - offset, pos - offset + n);
      } else if (unitsOf(entry) === UNITS_PER_BLOCK) {
        // Raw blocks that follow each other in the file are read with one pread.
        let run = n;
        let last = entry;
        for (let next = block + 1; pos + run < end; next++) {
          const following = this.map.get(next);
          if (following !== last + UNITS_PER_BLOCK * 16 || this.partials.content(next) !== undefined) break;
          last = following;
          run += Math.min(bs, end - pos - run);
        }
        this.file.readRaw(out, pos - offset, run, slotOf(entry) * this.file.unit + from);
        pos += run;
        continue;
      } else {
        const decoded = this.decodedBlock(slotOf(entry), unitsOf(entry));
        out.set(decoded.subarray(from, from + n), pos - offset);
      }
      pos += n;
    }
    // Reads fill the caches too (map pages, decoded blocks); `out` is not part of them.
    this.keepCacheBound();
    return out;
  }

  write(offset: number, data: Uint8Array, options?: WriteOptions): void | Promise<void> {
    this.checkWritable();
    checkRange(this.size, offset, data.length);
    const hashing = this.hasher?.start(offset, data);
    if (hashing === undefined) return this.writeNow(offset, data, options, undefined);
    return hashing.then((hashed) => {
      // The device may have closed or failed while the worker hashed.
      this.checkWritable();
      this.writeNow(offset, data, options, hashed);
    });
  }

  private writeNow(offset: number, data: Uint8Array, options: WriteOptions | undefined, hashed: BlockHashes | undefined): void {
    const bs = this.blockSize;
    let done = 0;
    try {
      while (done < data.length) {
        const pos = offset + done;
        const block = Math.floor(pos / bs);
        const from = pos - block * bs;
        const n = Math.min(bs - from, data.length - done);
        if (n === bs) {
          // The aligned middle goes through the run writer: new blocks reach the file in few pwrites.
          const whole = Math.min(Math.floor((data.length - done) / bs), MAX_RUN_BLOCKS) * bs;
          this.partials.drop(block, whole / bs);
          const at = hashed === undefined ? -1 : (block - hashed.first) * 32;
          this.store(block, data.subarray(done, done + whole), hashed?.hashes.subarray(at, at + (whole / bs) * 32));
          done += whole;
          continue;
        } else {
          // Coalesced with the block's other pieces: stored once, not once per piece.
          this.partials.write(block, from, data.subarray(done, done + n));
        }
        done += n;
      }
      if (options?.fua === true) this.commit();
    } finally {
      this.keepCacheBound();
    }
  }

  trim(offset: number, length: number, options?: WriteOptions): void {
    this.writeZeroes(offset, length, options);
  }

  /** Zeros are never stored: whole blocks drop their reference, partial ones are rewritten. */
  writeZeroes(offset: number, length: number, options?: WriteOptions): void {
    this.checkWritable();
    checkRange(this.size, offset, length);
    const bs = this.blockSize;
    const end = offset + length;
    try {
      for (let pos = offset; pos < end; ) {
        const block = Math.floor(pos / bs);
        const from = pos - block * bs;
        const n = Math.min(bs - from, end - pos);
        if (n === bs) {
          this.partials.drop(block, 1);
          this.store(block, this.zero);
        } else if (this.map.get(block) !== 0 || this.partials.content(block) !== undefined) {
          this.partials.write(block, from, this.zero.subarray(0, n));
        }
        pos += n;
      }
      if (options?.fua === true) this.commit();
    } finally {
      this.keepCacheBound();
    }
  }

  extents(offset: number, length: number): Extent[] {
    checkOpen(this.closed, this.kind);
    checkRange(this.size, offset, length);
    const bs = this.blockSize;
    const out: Extent[] = [];
    const end = offset + length;
    let pos = offset;
    let runStart = offset;
    let runHole: boolean | undefined;
    for (let seen = 0; pos < end && seen < MAX_EXTENT_BLOCKS; seen++) {
      const block = Math.floor(pos / bs);
      const hole = this.map.get(block) === 0 && this.partials.content(block) === undefined;
      if (runHole !== undefined && hole !== runHole) {
        out.push({ length: pos - runStart, hole: runHole, zero: runHole });
        runStart = pos;
      }
      runHole = hole;
      pos = Math.min((block + 1) * bs, end);
    }
    if (runHole !== undefined) out.push({ length: pos - runStart, hole: runHole, zero: runHole });
    this.keepCacheBound();
    return out;
  }

  flush(): void {
    // A read-only store has nothing to make durable; FLUSH still succeeds, as nbdkit's does on a read-only export.
    if (this.readOnly) return checkOpen(this.closed, this.kind);
    this.checkWritable();
    this.commit();
  }

  /**
   * Frees now the slots of blocks that lost their last reference (overwritten, trimmed or zeroed since the last
   * commit), which otherwise wait for the next flush: it commits, as `flush` does. A chunk of the blocks file left
   * with no block is punched out, so `bytes` is how much smaller the file became on disk; a freed slot in a chunk
   * still in use takes the next new block of its size instead.
   */
  reclaim(): ReclaimResult {
    this.checkWritable();
    const blocks = this.index.reclaimable;
    const before = this.file.allocatedBytes();
    this.commit();
    const bytes = Math.max(0, before - this.file.allocatedBytes());
    const count = `${blocks.toLocaleString("en-US")} block${blocks === 1 ? "" : "s"}`;
    let detail: string;
    if (blocks === 0) detail = "no unreferenced blocks to free";
    else if (bytes > 0) detail = `${count} freed`;
    else detail = `${count} freed; their slots take new data first (the blocks file shrinks only when a whole chunk empties)`;
    return { bytes, detail };
  }

  private checkWritable(): void {
    checkOpen(this.closed, this.kind);
    refuseIfReadOnly(this.readOnly, this.kind);
    if (this.syncFailure !== undefined) {
      throw new DeviceError("EIO", `dedup device: ${this.syncFailure}; writes since the last flush may be lost, restart the daemon`);
    }
  }

  close(): void {
    if (this.closed) return;
    try {
      if (!this.readOnly) {
        if (this.syncFailure !== undefined) this.checkWritable();
        this.commit();
        // Fold the WAL into the database so the store is two plain files at rest.
        this.catalog.db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
      }
    } finally {
      this.closed = true;
      this.hasher?.close();
      this.partials.clear();
      this.map.clear();
      this.index.clear();
      this.decoded.clear();
      this.catalog.close();
      this.file.close();
    }
  }

  stats(): DeviceStats {
    const bs = this.blockSize;
    const index = this.index;
    const stored = index.liveUnits * this.file.unit;
    const gauges: DeviceGauge[] = [
      { name: "logical in use", value: index.logicalBlocks * bs, unit: "bytes", max: this.size },
      { name: "unique blocks", value: index.uniqueBlocks, unit: "count" },
      { name: "stored", value: stored, unit: "bytes" },
      { name: "dedup ratio", value: index.uniqueBlocks === 0 ? 1 : index.logicalBlocks / index.uniqueBlocks, unit: "ratio" },
      { name: "compression ratio", value: stored === 0 ? 1 : (index.uniqueBlocks * bs) / stored, unit: "ratio" },
      { name: "reclaimable blocks", value: index.reclaimable, unit: "count" },
      { name: "unflushed changes", value: index.dirtyCount + this.map.dirtyCount + this.partials.size, unit: "count" },
      { name: "blocks being coalesced", value: this.partials.size, unit: "count" },
      { name: "blocks hashed off-thread", value: this.hasher?.blocks ?? 0, unit: "count" },
      { name: "rewrite reads skipped", value: this.runs.preReadsSkipped, unit: "count" },
      { name: "memory cache", value: this.cacheMemory(), unit: "bytes", max: this.memoryCache },
      // Cache misses since opening: map pages read from the database, compressed blocks decoded.
      { name: "map pages loaded", value: this.map.loads, unit: "count" },
      { name: "blocks decoded", value: this.decoded.loads, unit: "count" },
    ];
    if (!this.closed) gauges.push({ name: "store file", value: this.file.allocatedBytes(), unit: "bytes" });
    return this.lastError === undefined ? { gauges } : { gauges, lastError: this.lastError };
  }

  /** Makes blocks `first`... hold `data` (whole blocks): zeros store nothing, known content gains a reference. */
  private store(first: number, data: Uint8Array, hashes?: Uint8Array): void {
    try {
      this.runs.store(first, data, hashes);
    } catch (e) {
      throw this.failed(ioError(this.kind, "write", this.file.path, e));
    }
  }

  /** One block's current content into `into`. */
  private blockContent(block: number, into: Buffer): void {
    const entry = this.map.get(block);
    if (entry === 0) into.fill(0);
    else if (unitsOf(entry) === UNITS_PER_BLOCK) this.file.readRaw(into, 0, this.blockSize, slotOf(entry) * this.file.unit);
    else into.set(this.decodedBlock(slotOf(entry), unitsOf(entry)));
  }

  private decodedBlock(slot: number, units: number): Buffer {
    return this.decoded.get(slot, (into) => this.file.readCompressed(slot, units, into, 0));
  }

  private releaseSlot(slot: number, units: number): void {
    this.decoded.delete(slot);
    const emptied = this.allocator.release(slot, units);
    if (emptied !== undefined) this.file.release(emptied);
  }

  /** Store the blocks being coalesced, sync the blocks file, then commit map and index together. */
  private commit(): void {
    this.partials.storeAll();
    if (this.index.dirtyCount === 0 && this.map.dirtyCount === 0) return;
    try {
      this.file.sync();
    } catch (e) {
      this.syncFailure = `syncing ${this.file.path} failed (${e instanceof Error ? e.message : String(e)})`;
      throw this.failed(ioError(this.kind, "flush", this.file.path, e));
    }
    try {
      this.catalog.transaction(() => {
        this.index.save();
        this.map.save();
      });
    } catch (e) {
      throw this.failed(ioError(this.kind, "flush", this.catalog.db.filename, e));
    }
    this.index.committed();
    this.map.committed();
    this.lastError = undefined;
  }

  private cacheMemory(): number {
    return this.map.memory + this.index.memory + this.decoded.memory + this.partials.memory;
  }

  /** Evicts clean cache entries past the bound; when dirty state alone exceeds it, commits early to make room. */
  private keepCacheBound(): void {
    if (this.closed || this.cacheMemory() <= this.memoryCache) return;
    const budget = this.memoryCache;
    while (this.cacheMemory() > budget) if (!this.decoded.evictOne()) break;
    if (this.cacheMemory() <= budget) return;
    this.map.shrink(budget / 2);
    this.index.shrink(budget / 2);
    if (this.cacheMemory() <= budget) return;
    this.commit();
    this.map.shrink(budget / 2);
    this.index.shrink(budget / 2);
  }

  private readBuffer(length: number): Buffer {
    if (length > SCRATCH_MAX) return Buffer.allocUnsafe(length);
    if (this.scratch.length < length) this.scratch = Buffer.alloc(Math.max(length, this.scratch.length * 2));
    return this.scratch.subarray(0, length);
  }

  private failed(error: DeviceError): DeviceError {
    this.lastError = error.message;
    return error;
  }
}
