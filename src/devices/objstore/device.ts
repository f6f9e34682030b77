/**
 * The objstore device: a volume whose segments live as objects in a store (S3 or a directory), served from a
 * local write-back cache. Requests touch only the cache; segments missing from it are fetched first (or start as
 * zeros when the store has none). FLUSH makes the cache durable locally, and in remote flush mode also waits until
 * the store has every write. Uploading is the uploader's job (uploader.ts); slots and eviction the cache's
 * (segment-cache.ts).
 */
import {
  checkOpen,
  checkRange,
  type BlockDevice,
  type DeviceCapabilities,
  type DeviceGauge,
  type DeviceStats,
  type Extent,
  type ReclaimResult,
} from "../device.ts";
import type { Logger } from "../../shared/log.ts";
import type { CacheFile, KnownSpan } from "./cache-file.ts";
import type { ObjstoreCatalog } from "./catalog.ts";
import type { FlushMode } from "./layout.ts";
import type { Segment } from "./segment.ts";
import type { SegmentCache } from "./segment-cache.ts";
import type { ObjectStore } from "./store/types.ts";
import type { TransferStats } from "./transfer-stats.ts";
import type { Uploader } from "./uploader.ts";
import { ioError } from "../io-error.ts";

export interface ObjstoreParts {
  readonly size: number;
  readonly blockSize: number;
  readonly objectSize: number;
  readonly flushMode: FlushMode;
  /** Keep clean cached segments across restarts (--objstore-persistcache). */
  readonly persistCache: boolean;
  /** --objstore-diskcache in bytes; 0 for the whole volume. */
  readonly cacheQuota: number;
  readonly cache: SegmentCache;
  readonly uploader: Uploader;
  readonly file: CacheFile;
  readonly catalog: ObjstoreCatalog;
  readonly store: ObjectStore;
  readonly stats: TransferStats;
  readonly log: Logger;
}

/** Reads up to this size that need no fetch go into a reused buffer; others get their own. */
const SCRATCH_MAX = 4 << 20;

/** One request's part inside one segment. */
interface Piece {
  readonly segment: number;
  /** Offset inside the segment. */
  readonly offset: number;
  readonly length: number;
  /** Offset inside the request. */
  readonly at: number;
}

export class ObjstoreDevice implements BlockDevice {
  readonly kind = "objstore";
  readonly size: number;
  readonly blockSize: number;
  readonly capabilities: DeviceCapabilities = { fua: false, trim: true, fastZero: true, multiConn: true, persistent: true };
  private readonly p: ObjstoreParts;
  private closed = false;
  private closing: Promise<void> | undefined;
  private scratch = new Uint8Array(64 * 1024);

  constructor(parts: ObjstoreParts) {
    this.p = parts;
    this.size = parts.size;
    this.blockSize = parts.blockSize;
  }

  read(offset: number, length: number): Uint8Array | Promise<Uint8Array> {
    checkOpen(this.closed, this.kind);
    checkRange(this.size, offset, length);
    const pieces = this.pieces(offset, length);
    const out = this.needsFetch(pieces) || length > SCRATCH_MAX ? Buffer.allocUnsafe(length) : this.readBuffer(length);
    for (let i = 0; i < pieces.length; i++) {
      const piece = pieces[i]!;
      const segment = this.p.cache.get(piece.segment);
      if (segment?.slot !== undefined) {
        this.readCached(segment, piece, out);
      } else if (segment === undefined || !segment.remote) {
        out.fill(0, piece.at, piece.at + piece.length);
      } else {
        return this.readRest(pieces, i, out);
      }
    }
    return out;
  }

  /** Whether any piece's segment is in the store but not in the cache (the read then waits for a fetch). */
  private needsFetch(pieces: readonly Piece[]): boolean {
    for (let i = 0; i < pieces.length; i++) {
      const segment = this.p.cache.get(pieces[i]!.segment);
      if (segment !== undefined && segment.slot === undefined && segment.remote) return true;
    }
    return false;
  }

  /**
   * Where a read served entirely from the cache lands. A fresh buffer per read cost more than the read itself (1 MiB
   * reads: fresh pages faulted in every time), and the contract lets a result be a view that is only valid until the
   * caller has consumed it in the same turn; a read that must fetch gets its own buffer, since it awaits.
   */
  private readBuffer(length: number): Uint8Array {
    if (this.scratch.length < length) this.scratch = new Uint8Array(Math.max(length, this.scratch.length * 2));
    return this.scratch.subarray(0, length);
  }

  /** The slow path of `read`: from the first piece whose segment must be fetched on. */
  private async readRest(pieces: readonly Piece[], from: number, out: Uint8Array): Promise<Uint8Array> {
    for (let i = from; i < pieces.length; i++) {
      const piece = pieces[i]!;
      const segment = this.p.cache.get(piece.segment);
      if (segment === undefined || (segment.slot === undefined && !segment.remote)) {
        out.fill(0, piece.at, piece.at + piece.length);
        continue;
      }
      await this.p.cache.pin(segment);
      try {
        this.readCached(segment, piece, out);
      } finally {
        this.p.cache.unpin(segment);
      }
    }
    return out;
  }

  private readCached(segment: Segment, piece: Piece, out: Uint8Array): void {
    try {
      this.p.file.read(segment.slot!, piece.offset, out, piece.at, piece.length);
    } catch (e) {
      throw ioError(this.kind, "read", this.p.file.path, e);
    }
    this.p.cache.touch(segment);
  }

  write(offset: number, data: Uint8Array): void | Promise<void> {
    checkOpen(this.closed, this.kind);
    checkRange(this.size, offset, data.length);
    return this.change(offset, data.length, (segment, piece) => this.p.file.write(segment.slot!, piece.offset, data.subarray(piece.at, piece.at + piece.length)), (slot, piece) =>
      this.p.file.write(slot, piece.offset, data.subarray(piece.at, piece.at + piece.length)),
    );
  }

  trim(offset: number, length: number): void | Promise<void> {
    return this.writeZeroes(offset, length);
  }

  /** Zeroing punches the cached bytes out; a segment left all zeros has its object deleted at the next upload. */
  writeZeroes(offset: number, length: number): void | Promise<void> {
    checkOpen(this.closed, this.kind);
    checkRange(this.size, offset, length);
    return this.change(
      offset,
      length,
      (segment, piece) => this.p.file.zero(segment.slot!, piece.offset, piece.length),
      // A fresh slot reads as zeros already.
      () => {},
      true,
    );
  }

  /**
   * Applies a change piece by piece: `apply` on a cached segment (marked dirty first), `fill` on a fresh slot when
   * the old bytes are not needed. With `zeroing`, segments that read as zeros already are left alone.
   */
  private change(
    offset: number,
    length: number,
    apply: (segment: Segment, piece: Piece) => void,
    fill: (slot: number, piece: Piece) => void,
    zeroing = false,
  ): void | Promise<void> {
    const pieces = this.pieces(offset, length);
    for (let i = 0; i < pieces.length; i++) {
      const piece = pieces[i]!;
      const segment = this.p.cache.get(piece.segment);
      if (segment?.slot !== undefined) {
        this.applyCached(segment, piece, apply);
      } else if (zeroing && (segment === undefined || segment.empty)) {
        continue;
      } else {
        return this.changeRest(pieces, i, apply, fill, zeroing);
      }
    }
  }

  private async changeRest(
    pieces: readonly Piece[],
    from: number,
    apply: (segment: Segment, piece: Piece) => void,
    fill: (slot: number, piece: Piece) => void,
    zeroing: boolean,
  ): Promise<void> {
    for (let i = from; i < pieces.length; i++) {
      const piece = pieces[i]!;
      const segment = this.p.cache.segment(piece.segment);
      if (zeroing && segment.empty) continue;
      // The old bytes matter only where the store has them and the piece does not replace the whole segment.
      const replaces = !segment.remote || (piece.offset === 0 && piece.length === segment.length);
      const filled = await this.p.cache.pin(segment, replaces ? (slot) => fill(slot, piece) : undefined);
      try {
        if (!filled) this.applyCached(segment, piece, apply);
      } finally {
        this.p.cache.unpin(segment);
      }
    }
  }

  private applyCached(segment: Segment, piece: Piece, apply: (segment: Segment, piece: Piece) => void): void {
    this.p.cache.markDirty(segment);
    try {
      apply(segment, piece);
    } catch (e) {
      throw ioError(this.kind, "write", this.p.file.path, e);
    }
    this.p.cache.touch(segment);
  }

  /**
   * Segments the store never had and the cache does not hold are holes; in cached segments the cache file's holes
   * (zeroed or never written ranges) are too; everything else is data.
   */
  extents(offset: number, length: number): readonly Extent[] {
    checkOpen(this.closed, this.kind);
    checkRange(this.size, offset, length);
    const out: Extent[] = [];
    const add = (n: number, hole: boolean) => {
      const last = out[out.length - 1];
      if (last !== undefined && last.hole === hole) out[out.length - 1] = { length: last.length + n, hole, zero: hole };
      else out.push({ length: n, hole, zero: hole });
    };
    // What the kernel said about the cache file so far in this (synchronous) pass; see CacheFile.runs.
    const known: KnownSpan = { from: 0, to: 0, hole: false };
    for (const piece of this.pieces(offset, length)) {
      const segment = this.p.cache.get(piece.segment);
      if (segment?.slot !== undefined) {
        try {
          for (const run of this.p.file.runs(segment.slot, piece.offset, piece.length, known)) add(run.length, run.hole);
        } catch (e) {
          throw ioError(this.kind, "extents", this.p.file.path, e);
        }
      } else add(piece.length, segment === undefined || segment.empty);
    }
    return out;
  }

  async flush(): Promise<void> {
    checkOpen(this.closed, this.kind);
    await this.flushLocal();
    if (this.p.flushMode === "remote") await this.p.uploader.flushAll();
  }

  /** The cache's bytes, then the catalog's rows, durable on local disk. */
  private async flushLocal(): Promise<void> {
    try {
      await this.p.file.sync();
      this.p.catalog.commitDurably();
    } catch (e) {
      throw ioError(this.kind, "flush", this.p.file.path, e);
    }
  }

  close(): Promise<void> {
    this.closed = true;
    this.closing ??= this.shutDown();
    return this.closing;
  }

  /**
   * Flushes locally, uploads what is dirty (one round: when the store is down the writes stay in the cache, durable,
   * and the next start uploads them), drops clean segments unless the cache is persistent, and releases everything.
   */
  private async shutDown(): Promise<void> {
    const { uploader, cache, file, catalog, store, log } = this.p;
    try {
      await uploader.stop();
      await this.flushLocal();
      try {
        await uploader.flushAll(1);
      } catch (e) {
        const dirty = uploader.dirtySegments().length;
        log.log("warn", `objstore: ${dirty} segments could not be uploaded; they stay in the local cache and are uploaded at the next start`, {
          error: e instanceof Error ? e.message : String(e),
        });
      }
      if (!this.p.persistCache) for (const s of [...cache.cached()]) if (!s.dirty && !s.busy) cache.evict(s);
      file.trimEnd();
      catalog.commitDurably();
    } finally {
      file.close();
      catalog.close();
      store.close();
    }
  }

  /**
   * Gives the store its space back now rather than at the next upload round: every dirty segment is uploaded, so a
   * trimmed or zeroed segment deletes its object and a partly trimmed one is replaced by a smaller object, and
   * all-zero segments leave the cache. `bytes` is the cache space released.
   */
  async reclaim(): Promise<ReclaimResult> {
    checkOpen(this.closed, this.kind);
    const { cache, stats, uploader, objectSize } = this.p;
    const before = { deletes: stats.deletes, uploads: stats.uploads, cached: cache.cachedCount };
    await this.flushLocal();
    // Each upload evicts its segment, when it turned out all zero, before the upload's promise settles.
    await uploader.flushAll();
    const deleted = stats.deletes - before.deletes;
    const uploaded = stats.uploads - before.uploads;
    const released = Math.max(0, before.cached - cache.cachedCount) * objectSize;
    const plural = (n: number, what: string) => `${n.toLocaleString("en-US")} ${what}${n === 1 ? "" : "s"}`;
    return { bytes: released, detail: `${plural(deleted, "remote object")} deleted, ${plural(uploaded, "segment")} uploaded` };
  }

  stats(): DeviceStats {
    const { cache, stats, cacheQuota, objectSize } = this.p;
    let dirty = 0;
    let dirtyBytes = 0;
    for (const s of cache.cached()) {
      if (s.dirty) {
        dirty++;
        dirtyBytes += s.length;
      }
    }
    const rates = stats.rates();
    const cacheBytes = cache.cachedCount * objectSize;
    const gauges: DeviceGauge[] = [
      { name: "dirty objects", value: dirty, unit: "count", max: Math.max(1, cache.cachedCount) },
      { name: "dirty bytes", value: dirtyBytes, unit: "bytes" },
      { name: "uploads in flight", value: stats.uploadsInFlight, unit: "count" },
      { name: "upload round", value: stats.roundDone, unit: "count", max: Math.max(1, stats.roundTotal) },
      { name: "cache", value: cacheBytes, unit: "bytes", ...(cacheQuota > 0 ? { max: cacheQuota } : {}) },
      { name: "since last full upload", value: stats.lastCleanAt === 0 ? 0 : (Date.now() - stats.lastCleanAt) / 1000, unit: "seconds" },
      { name: "upload rate", value: rates.up, unit: "bytes/s" },
      { name: "download rate", value: rates.down, unit: "bytes/s" },
      { name: "uploaded", value: stats.uploadedBytes, unit: "bytes" },
      { name: "downloaded", value: stats.downloadedBytes, unit: "bytes" },
      { name: "compression ratio", value: stats.uploadedBytes === 0 ? 1 : stats.uploadedPlainBytes / stats.uploadedBytes, unit: "ratio" },
      { name: "store errors", value: stats.errors, unit: "count" },
    ];
    // The error shows while the store is failing; once it works again only the error count remains.
    return stats.failing && stats.lastError !== undefined ? { gauges, lastError: stats.lastError } : { gauges };
  }

  private pieces(offset: number, length: number): Piece[] {
    const size = this.p.objectSize;
    const out: Piece[] = [];
    for (let at = 0; at < length; ) {
      const position = offset + at;
      const segment = Math.floor(position / size);
      const inSegment = position - segment * size;
      const n = Math.min(length - at, size - inSegment);
      out.push({ segment, offset: inSegment, length: n, at });
      at += n;
    }
    return out;
  }
}
