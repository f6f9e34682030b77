/**
 * The object codec with its heavy jobs on the worker pool (src/shared/worker-pool.ts): encoding an object of
 * OFFLOAD_MIN_BYTES or more (lz4/gzip + AES-GCM/CTR or SHA-256 of every chunk) and opening a run of chunks that big,
 * so the serving thread keeps answering requests while an upload round seals its objects. Smaller jobs stay inline:
 * below ~256 KiB posting the job costs about what the work does (the hand-off table in docs/ARCHITECTURE.md).
 *
 * Same bytes either way (the worker runs ObjectCodec itself). When the pool cannot run a job at all (the worker
 * does not start or dies, e.g. a binary built without seal-worker.ts), the codec works inline from then on and says
 * so once (to `onInline`, and in the error of that job when the job cannot simply be redone inline); a job's own
 * error (an object that does not open) comes back as it is.
 */
import type { Logger } from "../../../shared/log.ts";
import { workerEntry } from "../../../shared/worker-entry.ts";
import { acquireWorkerPool, WorkerJobError, type WorkerPool, type WorkerPoolLease } from "../../../shared/worker-pool.ts";
import { type EncodedObject, type LogExtent, LogObjectError, ObjectCodec, type ObjectCodecOptions, type ObjectIdentity, type ObjectLayout } from "./log-object.ts";
import type { VolumeKeys } from "./keys.ts";
import type { Manifest } from "./manifest.ts";
import type { sealJobs } from "./seal-jobs.ts";

/** Jobs from this size on go to a worker. */
export const OFFLOAD_MIN_BYTES = 256 * 1024;
const ENTRY = workerEntry("src/devices/objstore/codec/seal-worker.ts");
/** Failures of the pool itself rather than of the job. */
const POOL_FAILURES = new Set(["WorkerExit", "DataCloneError", "PoolClosed"]);

type SealJobs = typeof sealJobs;

/** The buffer behind `bytes` to move to a worker, when `bytes` is all of it (a view of part of one is copied). */
function movable(bytes: Uint8Array): ArrayBuffer[] {
  const whole = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength && bytes.buffer instanceof ArrayBuffer;
  return whole ? [bytes.buffer as ArrayBuffer] : [];
}

/** A job whose input was handed to a worker that then failed: the caller still has what it needs to redo it. */
export class WorkerLostError extends Error {
  override readonly name = "WorkerLostError";
}

export class OffloadedCodec extends ObjectCodec {
  private lease: WorkerPoolLease<SealJobs> | undefined;
  private inlineOnly = false;
  private closed = false;
  /** Jobs run on a worker so far, and jobs on a worker now (for tests and gauges). */
  offloaded = 0;
  inFlight = 0;
  private readonly entry: URL;

  private readonly onInline: ((reason: string) => void) | undefined;

  /**
   * `workerEntry` replaces seal-worker.ts (tests use one that cannot start, to see the inline fallback); `onInline`
   * hears once, with the reason, that the codec has gone inline for good (the daemon logs it as a warning).
   */
  constructor(options: ObjectCodecOptions & { readonly workerEntry?: URL; readonly onInline?: (reason: string) => void }) {
    super(options);
    this.entry = options.workerEntry ?? ENTRY;
    this.onInline = options.onInline;
  }

  /**
   * `encode` on a worker when `data` is big enough. With `handOver` the caller gives `data` away (its view is
   * detached, no copy is made); without it the worker gets a copy.
   */
  override async encode(id: ObjectIdentity, extents: readonly LogExtent[], data: Uint8Array, handOver = false, md5 = false): Promise<EncodedObject> {
    const pool = this.poolFor(data.length);
    if (pool === undefined) return await super.encode(id, extents, data, false, md5);
    const transfer = handOver ? movable(data) : [];
    const length = data.length;
    try {
      return await this.counted(pool.run("encodeObject", { options: this.jobOptions(), id, extents, data, md5 }, transfer));
    } catch (e) {
      // With the data handed over it is gone from here: the caller (the uploader) reads the object again and retries.
      const retry = data.length === length ? () => super.encode(id, extents, data, false, md5) : undefined;
      return await this.recover(e, `encoding object ${id.seq}`, retry);
    }
  }

  /**
   * `decodeChunks` on a worker when `stored` is big enough. With `handOver` the caller gives `stored` away (moved to
   * the worker without a copy, which costs a fraction of cloning it: 0.07 against 1.7 ms per 4 MiB here); should the
   * pool then fail, the bytes are gone and the call throws a WorkerLostError, after which the caller fetches them
   * again (the codec is inline from then on). Without it the worker gets a copy.
   */
  override async decodeChunks(volumeId: Uint8Array, layout: ObjectLayout, first: number, stored: Uint8Array, handOver = false): Promise<Uint8Array> {
    const pool = this.poolFor(stored.length);
    if (pool === undefined) return await super.decodeChunks(volumeId, layout, first, stored);
    const transfer = handOver ? movable(stored) : [];
    const length = stored.length;
    try {
      return await this.counted(pool.run("decodeChunks", { options: this.jobOptions(), volumeId, layout, first, stored }, transfer));
    } catch (e) {
      const retry = stored.length === length ? () => super.decodeChunks(volumeId, layout, first, stored) : undefined;
      return await this.recover(e, `opening chunks of object ${layout.seq}`, retry, true);
    }
  }

  /** Gives the pool back (its workers end when no other volume uses them). Later jobs run inline. */
  override close(): void {
    this.closed = true;
    this.lease?.release();
    this.lease = undefined;
  }

  private poolFor(bytes: number): WorkerPool<SealJobs> | undefined {
    if (bytes < OFFLOAD_MIN_BYTES || this.inlineOnly || this.closed) return undefined;
    this.lease ??= acquireWorkerPool<SealJobs>(this.entry);
    return this.lease.pool;
  }

  private async counted<T>(job: Promise<T>): Promise<T> {
    this.inFlight++;
    try {
      const value = await job;
      this.offloaded++;
      return value;
    } finally {
      this.inFlight--;
    }
  }

  private jobOptions(): ObjectCodecOptions {
    return { compression: this.compression, encryption: this.encryption, chunkSize: this.chunkSize, ...(this.keys === undefined ? {} : { keys: this.keys }) };
  }

  /** A job error as the inline codec would throw it; a pool failure switches to inline and retries when it can. */
  private async recover<T>(e: unknown, what: string, retry: (() => Promise<T>) | undefined, lostInput = false): Promise<T> {
    if (!(e instanceof WorkerJobError)) throw e;
    if (!POOL_FAILURES.has(e.kind)) throw e.kind === "LogObjectError" ? new LogObjectError(e.message) : new Error(e.message);
    if (e.kind === "PoolClosed" && this.closed && retry !== undefined) return await retry();
    if (e.kind !== "PoolClosed") {
      if (!this.inlineOnly) this.onInline?.(`the sealing worker failed (${e.message}); sealing and opening objects on the serving thread from now on`);
      this.inlineOnly = true;
      this.lease?.release();
      this.lease = undefined;
    }
    if (retry !== undefined) return await retry();
    if (lostInput) throw new WorkerLostError(`${what}: the sealing worker failed (${e.message}) with the bytes handed to it; opening on the serving thread from now on`);
    throw new Error(`${what}: the sealing worker failed (${e.message}); sealing on the serving thread from now on, the upload is retried`);
  }
}

/** The codec of volume `storeName` with its manifest's settings and keys; going inline for good is logged as a warning. */
export function volumeCodec(manifest: Manifest, keys: VolumeKeys | undefined, log: Logger, storeName: string): OffloadedCodec {
  return new OffloadedCodec({
    compression: manifest.compression,
    encryption: manifest.encryption,
    ...(keys === undefined ? {} : { keys }),
    chunkSize: manifest.chunkSize,
    onInline: (reason) => log.log("warn", `objstore ${storeName}: ${reason}`),
  });
}
