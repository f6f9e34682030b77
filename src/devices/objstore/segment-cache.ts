/**
 * The segments the volume has and the cache slots that hold their bytes: fetching a segment into a slot, keeping
 * the catalog's rows in step, and evicting least-recently-used segments (clean ones first; a dirty one is uploaded
 * before it goes) when the cache is at its quota.
 *
 * Order that keeps a crash harmless: a segment's row says "dirty" before its slot holds the write; a fetched
 * segment's bytes are synced before the row names its slot; an evicted segment's row is durably cleared before its
 * slot is punched and reused.
 */
import { DeviceError } from "../device.ts";
import type { Logger } from "../../shared/log.ts";
import type { CacheFile } from "./cache-file.ts";
import type { ObjstoreCatalog } from "./catalog.ts";
import { segmentKey } from "./layout.ts";
import { Segment } from "./segment.ts";
import type { ObjectStore } from "./store/types.ts";
import type { TransferStats } from "./transfer-stats.ts";

/** Turns a stored object back into the segment's bytes (the codec). */
export interface SegmentDecoder {
  decode(object: Uint8Array, segment: number, expect?: { minGeneration?: number }): Promise<{ plain: Uint8Array; generation: number }>;
}

export interface SegmentCacheParts {
  readonly file: CacheFile;
  readonly catalog: ObjstoreCatalog;
  readonly store: ObjectStore;
  readonly codec: SegmentDecoder;
  readonly storeName: string;
  readonly volumeSize: number;
  readonly objectSize: number;
  /** Slots the cache may use (--objstore-diskcache / objectSize); Infinity for no bound. */
  readonly maxSlots: number;
  readonly stats: TransferStats;
  readonly log: Logger;
}

/** How long a request waits for a slot while every cached segment is dirty and the store keeps failing. */
const FULL_CACHE_PATIENCE_MS = 30_000;
/** Bytes of a fetched segment written at a time; all-zero pieces are skipped (a free slot reads as zeros). */
const FILL_PIECE = 64 * 1024;

export class SegmentCache {
  readonly objectSize: number;
  readonly maxSlots: number;
  private readonly parts: SegmentCacheParts;
  /** Every segment with any state (cached, dirty or stored); others are empty. */
  private readonly segments = new Map<number, Segment>();
  /** The cached segments, least recently used first. */
  private readonly lru = new Map<number, Segment>();
  /** Slots handed out, including those being filled. */
  private slotsInUse = 0;
  private waiters: Array<() => void> = [];
  /** Uploads a dirty segment; set by the uploader, which owns uploading. */
  uploadForEviction: (segment: Segment) => Promise<void> = () => Promise.reject(new Error("no uploader"));

  constructor(parts: SegmentCacheParts) {
    this.parts = parts;
    this.objectSize = parts.objectSize;
    this.maxSlots = parts.maxSlots;
  }

  get segmentCount(): number {
    return Math.ceil(this.parts.volumeSize / this.objectSize);
  }

  lengthOf(id: number): number {
    return Math.min(this.objectSize, this.parts.volumeSize - id * this.objectSize);
  }

  /** The segment's state, or undefined for one that is neither cached nor stored. */
  get(id: number): Segment | undefined {
    return this.segments.get(id);
  }

  /** The segment's state, created empty when it has none yet. */
  segment(id: number): Segment {
    let s = this.segments.get(id);
    if (s === undefined) {
      s = new Segment(id, this.lengthOf(id));
      this.segments.set(id, s);
    }
    return s;
  }

  /** Installs a segment read from the catalog or found in the store at open. */
  adopt(segment: Segment): void {
    this.segments.set(segment.id, segment);
    if (segment.slot !== undefined) {
      this.lru.set(segment.id, segment);
      this.slotsInUse++;
    }
  }

  /** The cached segments, least recently used first. */
  cached(): IterableIterator<Segment> {
    return this.lru.values();
  }

  all(): IterableIterator<Segment> {
    return this.segments.values();
  }

  get cachedCount(): number {
    return this.slotsInUse;
  }

  touch(segment: Segment): void {
    this.lru.delete(segment.id);
    this.lru.set(segment.id, segment);
  }

  /** Records that the segment's cached bytes are about to change; call before writing them. */
  markDirty(segment: Segment): void {
    const wasDirty = segment.dirty;
    segment.writeSeq++;
    if (!wasDirty) this.parts.catalog.save(segment.row());
  }

  /** Saves the segment's row (after an upload changed its remote state). */
  saveRow(segment: Segment): void {
    this.parts.catalog.save(segment.row());
  }

  /**
   * Makes the segment's bytes cached and pins them until `unpin`. A segment the store has is fetched, unless `fill`
   * is given: then the caller replaces the fetched bytes anyway (a whole-segment write or zeroing, or a segment the
   * store lacks), and `fill` writes the new content into the fresh all-zero slot, synchronously, before anyone can
   * see the slot; the segment is marked dirty first. Returns whether `fill` ran (else the caller writes itself).
   */
  async pin(segment: Segment, fill?: (slot: number) => void): Promise<boolean> {
    let filled = false;
    for (;;) {
      if (segment.slot !== undefined) {
        segment.pins++;
        this.touch(segment);
        return filled;
      }
      if (segment.loading !== undefined) {
        await segment.loading;
        continue;
      }
      const job = this.load(segment, fill);
      const loading = job.then(() => undefined);
      loading.catch(() => {});
      segment.loading = loading;
      try {
        filled = await job;
      } finally {
        segment.loading = undefined;
        this.wake();
      }
    }
  }

  unpin(segment: Segment): void {
    segment.pins--;
    if (segment.pins === 0) this.wake();
  }

  private async load(segment: Segment, fill: ((slot: number) => void) | undefined): Promise<boolean> {
    const slot = await this.freeSlot();
    if (fill !== undefined || !segment.remote) {
      segment.slot = slot;
      this.lru.set(segment.id, segment);
      if (fill !== undefined) {
        this.markDirty(segment);
        fill(slot);
      } else this.saveRow(segment);
      return fill !== undefined;
    }
    try {
      const plain = await this.download(segment);
      if (plain !== undefined) this.fillSlot(slot, plain, segment.length);
      // The bytes must be on disk before a row says this slot holds them.
      await this.parts.file.sync();
    } catch (e) {
      this.parts.file.releaseSlot(slot);
      this.slotsInUse--;
      throw e;
    }
    segment.slot = slot;
    this.lru.set(segment.id, segment);
    this.saveRow(segment);
    return false;
  }

  /** Fetches and decodes the segment's object; undefined when the store no longer has it (it reads as zeros then). */
  private async download(segment: Segment): Promise<Uint8Array | undefined> {
    const { store, codec, storeName, stats, log } = this.parts;
    const key = segmentKey(storeName, segment.id);
    let got;
    try {
      got = await store.get(key);
    } catch (e) {
      const message = `cannot fetch segment ${segment.id} (${key}) from ${store.description}: ${e instanceof Error ? e.message : String(e)}`;
      stats.failed(message);
      throw new DeviceError("EIO", `objstore device: ${message}`);
    }
    if (got === undefined) {
      log.log("warn", "objstore: a segment's object is gone from the store; it reads as zeros", { segment: segment.id, key });
      segment.etag = undefined;
      return undefined;
    }
    stats.downloads++;
    stats.downloadedBytes += got.body.length;
    try {
      const decoded = await codec.decode(got.body, segment.id, { minGeneration: segment.generation });
      segment.generation = decoded.generation;
      segment.etag = got.etag;
      return decoded.plain;
    } catch (e) {
      const message = `segment ${segment.id} (${key}) in ${store.description} is unreadable: ${e instanceof Error ? e.message : String(e)}`;
      stats.failed(message);
      throw new DeviceError("EIO", `objstore device: ${message}`);
    }
  }

  private fillSlot(slot: number, plain: Uint8Array, length: number): void {
    const end = Math.min(length, plain.length);
    for (let at = 0; at < end; at += FILL_PIECE) {
      const piece = plain.subarray(at, Math.min(end, at + FILL_PIECE));
      if (!isZero(piece)) this.parts.file.write(slot, at, piece);
    }
  }

  /** A slot for a segment being cached: a free one, or one freed by evicting the least recently used idle segment. */
  private async freeSlot(): Promise<number> {
    let waitingSince: number | undefined;
    for (;;) {
      if (this.slotsInUse < this.maxSlots) {
        this.slotsInUse++;
        return this.parts.file.takeSlot();
      }
      const clean = this.idle(false);
      if (clean !== undefined) {
        this.evict(clean);
        continue;
      }
      const dirty = this.idle(true);
      if (dirty !== undefined) {
        try {
          await this.uploadForEviction(dirty);
        } catch (e) {
          // The store is failing and the cache is full of writes it lacks: wait for it, then give up on this request.
          waitingSince ??= Date.now();
          if (Date.now() - waitingSince > FULL_CACHE_PATIENCE_MS) {
            throw new DeviceError(
              "EIO",
              `objstore device: the cache is full of segments not yet uploaded and uploading fails ` +
                `(${e instanceof Error ? e.message : String(e)}); raise --objstore-diskcache or fix the store`,
            );
          }
          await sleep(1000);
        }
        continue;
      }
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }

  /** The least recently used cached segment nobody is using, clean or dirty as asked. */
  private idle(dirty: boolean): Segment | undefined {
    for (const s of this.lru.values()) if (!s.busy && s.dirty === dirty) return s;
    return undefined;
  }

  /**
   * Drops a clean, idle segment from the cache. Its row is cleared durably before the slot is punched, so a crash
   * can never leave a row naming a slot another segment has since written.
   */
  evict(segment: Segment): void {
    if (segment.dirty || segment.busy || segment.slot === undefined) throw new Error(`segment ${segment.id} cannot be evicted now`);
    const slot = segment.slot;
    segment.slot = undefined;
    this.lru.delete(segment.id);
    this.saveRow(segment);
    this.parts.catalog.commitDurably();
    this.parts.file.releaseSlot(slot);
    this.slotsInUse--;
    if (segment.empty && segment.generation === 0) this.segments.delete(segment.id);
    this.wake();
  }

  /** Wakes requests waiting for a slot (something was unpinned, uploaded or evicted). */
  wake(): void {
    const waiting = this.waiters;
    this.waiters = [];
    for (const resolve of waiting) resolve();
  }
}

const ZEROS = Buffer.alloc(FILL_PIECE);

/** Whether every byte is zero (memcmp against a zero buffer: far faster than a JavaScript loop on megabytes). */
export function isZero(bytes: Uint8Array): boolean {
  for (let at = 0; at < bytes.length; at += ZEROS.length) {
    const n = Math.min(ZEROS.length, bytes.length - at);
    if (Buffer.compare(bytes.subarray(at, at + n), ZEROS.subarray(0, n)) !== 0) return false;
  }
  return true;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
