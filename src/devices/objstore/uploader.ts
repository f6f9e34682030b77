/**
 * Write-back: uploads dirty segments to the store, on a timer (--objstore-flushevery) with a bounded number in
 * parallel (--objstore-concurflush), for eviction, and for FLUSH in remote mode. An upload snapshots the segment's
 * bytes in one synchronous read, so it is consistent; a write that lands while it is in flight keeps the segment
 * dirty. A failed upload leaves the segment dirty and the timer backs off, so nothing is dropped while the store is
 * down and uploads resume by themselves when it returns.
 */
import { DeviceError, type DeviceNotice } from "../device.ts";
import { formatSize } from "../../shared/format-size.ts";
import type { Logger } from "../../shared/log.ts";
import type { CacheFile } from "./cache-file.ts";
import type { ObjstoreCatalog } from "./catalog.ts";
import { segmentKey } from "./layout.ts";
import type { Segment } from "./segment.ts";
import { isZero, type SegmentCache } from "./segment-cache.ts";
import type { ObjectStore } from "./store/types.ts";
import type { TransferStats } from "./transfer-stats.ts";

/** Turns a segment's bytes into its object (the codec). */
export interface SegmentEncoder {
  encode(plain: Uint8Array, segment: number, generation: number): Promise<Uint8Array>;
}

export interface UploaderParts {
  readonly cache: SegmentCache;
  readonly file: CacheFile;
  readonly catalog: ObjstoreCatalog;
  readonly store: ObjectStore;
  readonly codec: SegmentEncoder;
  readonly storeName: string;
  readonly stats: TransferStats;
  readonly log: Logger;
  /** Milliseconds between upload rounds. */
  readonly intervalMs: number;
  /** Uploads in flight at most. */
  readonly concurrency: number;
  /** The highest generation any segment has (new uploads go above it). */
  readonly lastGeneration: number;
  /** Told of finished upload rounds, and of the store failing and working again; without it these are logged. */
  readonly notify?: (notice: DeviceNotice) => void;
}

/** Backoff after a failed round: doubling from the first value up to the last. */
const BACKOFF_MIN_MS = 1000;
const BACKOFF_MAX_MS = 60_000;
/** FLUSH in remote mode tries this many rounds before it reports EIO (the data stays dirty and durable locally). */
const REMOTE_FLUSH_ATTEMPTS = 3;

export class Uploader {
  private readonly parts: UploaderParts;
  private lastGeneration: number;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private round: Promise<void> | undefined;
  private backoffMs = 0;
  private stopped = false;
  /** Uploads waiting for a free place among the `concurrency` allowed. */
  private readonly queue: Array<() => void> = [];
  private running = 0;

  constructor(parts: UploaderParts) {
    this.parts = parts;
    this.lastGeneration = parts.lastGeneration;
    parts.cache.uploadForEviction = (segment) => this.upload(segment);
  }

  /** Starts the timer; the first round runs at once when something is dirty (a restart after a crash). */
  start(): void {
    this.schedule(this.dirtySegments().length > 0 ? 0 : this.parts.intervalMs);
  }

  /** Stops the timer and waits for the round in flight. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    await this.round?.catch(() => {});
  }

  dirtySegments(): Segment[] {
    const out: Segment[] = [];
    for (const s of this.parts.cache.cached()) if (s.dirty) out.push(s);
    return out;
  }

  /**
   * Uploads everything dirty now and waits until the store has every write made before the call, retrying failed
   * rounds with backoff; rejects with EIO when the store keeps failing (the writes stay dirty and durable locally).
   */
  async flushAll(attempts = REMOTE_FLUSH_ATTEMPTS): Promise<void> {
    const targets = this.dirtySegments().map((s) => [s, s.writeSeq] as const);
    let lastError: unknown;
    for (let attempt = 0; attempt < attempts; attempt++) {
      const pending = targets.filter(([s, seq]) => s.uploadedSeq < seq);
      if (pending.length === 0) return;
      if (attempt > 0) await sleep(BACKOFF_MIN_MS * 2 ** (attempt - 1));
      const results = await Promise.allSettled(pending.map(([s, seq]) => this.uploadUntil(s, seq)));
      const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
      if (failed === undefined) return;
      lastError = failed.reason;
    }
    const message = lastError instanceof Error ? lastError.message : String(lastError);
    throw new DeviceError("EIO", `objstore device: cannot upload to ${this.parts.store.description}: ${message}`);
  }

  private async uploadUntil(segment: Segment, seq: number): Promise<void> {
    while (segment.uploadedSeq < seq && segment.slot !== undefined) await this.upload(segment);
  }

  /** One upload of the segment's current bytes (or joins the one in flight). */
  upload(segment: Segment): Promise<void> {
    if (segment.upload !== undefined) return segment.upload;
    const job = this.withPlace(() => this.uploadOnce(segment)).finally(() => {
      segment.upload = undefined;
      this.dropIfEmpty(segment);
      this.parts.cache.wake();
    });
    segment.upload = job;
    return job;
  }

  private async withPlace<T>(work: () => Promise<T>): Promise<T> {
    while (this.running >= this.parts.concurrency) await new Promise<void>((resolve) => this.queue.push(resolve));
    this.running++;
    try {
      return await work();
    } finally {
      this.running--;
      this.queue.shift()?.();
    }
  }

  private async uploadOnce(segment: Segment): Promise<void> {
    const { file, store, codec, storeName, stats, cache } = this.parts;
    if (segment.slot === undefined || !segment.dirty) return;
    const seq = segment.writeSeq;
    const snapshot = Buffer.allocUnsafe(segment.length);
    file.read(segment.slot, 0, snapshot, 0, segment.length);
    const key = segmentKey(storeName, segment.id);
    const generation = Math.max(this.lastGeneration + 1, Date.now() * 1000);
    this.lastGeneration = generation;
    stats.uploadsInFlight++;
    let etag: string | undefined;
    try {
      if (isZero(snapshot)) {
        // A segment that is all zeros needs no object: a trimmed or zeroed segment gives its space back in the store.
        if (segment.etag !== undefined) {
          await store.delete(key);
          stats.deletes++;
        }
      } else {
        const body = await codec.encode(snapshot, segment.id, generation);
        etag = (await store.put(key, body)).etag;
        stats.uploads++;
        stats.uploadedBytes += body.length;
        stats.uploadedPlainBytes += snapshot.length;
      }
      // The snapshot's bytes must be on local disk before the row calls them clean (equal to the remote object).
      await file.sync();
    } catch (e) {
      stats.failed(`upload of segment ${segment.id} (${key}) to ${store.description}: ${e instanceof Error ? e.message : String(e)}`);
      throw e;
    } finally {
      stats.uploadsInFlight--;
    }
    stats.succeeded();
    if (etag !== undefined) segment.generation = generation;
    segment.etag = etag;
    segment.uploadedSeq = seq;
    cache.saveRow(segment);
  }

  /** A clean all-zero segment the store does not have is empty: its slot is wasted, so it leaves the cache. */
  private dropIfEmpty(segment: Segment): void {
    if (segment.etag === undefined && !segment.dirty && !segment.busy && segment.slot !== undefined && segment.upload === undefined) {
      this.parts.cache.evict(segment);
    }
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.round = this.runRound().finally(() => {
        this.round = undefined;
      });
    }, ms);
  }

  private async runRound(): Promise<void> {
    const { stats, log, notify } = this.parts;
    const dirty = this.dirtySegments().filter((s) => s.upload === undefined);
    const started = Date.now();
    const bytesBefore = stats.uploadedBytes;
    stats.roundTotal = dirty.length;
    stats.roundDone = 0;
    const results = await Promise.allSettled(
      dirty.map(async (s) => {
        await this.upload(s);
        stats.roundDone++;
      }),
    );
    const failures = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failures.length > 0) {
      this.backoffMs = Math.min(BACKOFF_MAX_MS, this.backoffMs === 0 ? BACKOFF_MIN_MS : this.backoffMs * 2);
      const reason = failures[0]!.reason;
      const error = reason instanceof Error ? reason.message : String(reason);
      if (notify === undefined) log.log("warn", "objstore: uploads failed; the segments stay dirty and are retried", { failed: failures.length, retryInSeconds: this.backoffMs / 1000, error });
      else if (this.backoffMs === BACKOFF_MIN_MS) notify({ kind: "error", message: `uploads failing (${failures.length} segments stay dirty, retried with backoff): ${error}` });
      this.schedule(this.backoffMs);
      return;
    }
    const segments = `${dirty.length} segment${dirty.length === 1 ? "" : "s"}`;
    if (this.backoffMs > 0) {
      if (notify === undefined) log.log("info", "objstore: the store works again; uploads resumed", { uploaded: dirty.length });
      else notify({ kind: "recovered", message: `the store works again; uploads resumed (${segments} uploaded)` });
    } else if (dirty.length > 0) {
      const sent = formatSize(stats.uploadedBytes - bytesBefore);
      notify?.({ kind: "progress", message: `upload round: ${segments}, ${sent} sent in ${((Date.now() - started) / 1000).toFixed(1)} s` });
    }
    this.backoffMs = 0;
    if (this.dirtySegments().length === 0) stats.lastCleanAt = Date.now();
    this.schedule(this.parts.intervalMs);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
