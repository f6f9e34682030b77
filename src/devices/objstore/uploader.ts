/**
 * Uploads sealed log objects, lowest sequence number first, a bounded number at a time (--objstore-concurflush).
 * Uploads may finish out of order; what counts is the stored prefix, the highest sequence number up to which every
 * object is in the store, because that is what a cold open replays (it stops at the first gap). A remote FLUSH
 * waits for the prefix to pass its objects and for a lease check that started after they were stored, so an
 * acknowledged flush is never one a takeover had already fenced; without a FLUSH waiting, uploads check the lease
 * every two seconds, so a fenced writer stops soon even in local flush mode.
 *
 * A failed upload leaves its object sealed and durable locally; the uploader backs off (1 s doubling to 60 s) and
 * goes on by itself when the store works again. A fenced writer (another daemon took the volume over) stops.
 */
import { DeviceError, type DeviceNotice } from "../device.ts";
import { formatSize } from "../../shared/format-size.ts";
import { FLAG_CONTINUED, KIND_LOG, objectBytes } from "./codec/log-object.ts";
import type { Committer } from "./committer.ts";
import type { LogWriter } from "./log-writer.ts";
import { SEALED, STORED, type LogObject } from "./objects.ts";
import type { ReadCache } from "./read-cache.ts";
import type { Volume } from "./volume.ts";

const BACKOFF_MIN_MS = 1000;
const BACKOFF_MAX_MS = 60_000;
/** Failed upload rounds a remote FLUSH waits through before it reports EIO (the data stays durable locally). */
export const REMOTE_FLUSH_ATTEMPTS = 3;
/** Background lease checks while uploading: at most this often (a remote FLUSH always gets its own). */
const CHECK_EVERY_MS = 2000;

/** What the uploader needs from the writer lease. */
export interface LeaseGuard {
  /** Resolves once the lease is known to be held (after an open while the store was unreachable, on first contact). */
  ready(): Promise<void>;
  /** Undefined while this writer holds the volume; the reason when another daemon has taken it over. */
  check(): Promise<string | undefined>;
}

interface Waiter {
  readonly seq: number;
  readonly failuresAtStart: number;
  readonly attempts: number;
  readonly resolve: () => void;
  readonly reject: (e: Error) => void;
}

export class Uploader {
  /** Every object up to this sequence number is in the store. */
  storedPrefix: number;
  /** The stored prefix the last completed lease check covered. */
  private checkedPrefix: number;
  private readonly queue: LogObject[] = [];
  private running = 0;
  private backoffMs = 0;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  /** Failed upload rounds so far, and when the last one failed. */
  private failures = 0;
  private lastFailureAt = 0;
  private waiters: Waiter[] = [];
  private checking: Promise<void> | undefined;
  private lastCheckAt = 0;
  private checkAgain = false;
  private stopped = false;
  private readied = false;
  /** Why this writer is fenced, once it is. */
  fenced: string | undefined;
  uploadsInFlight = 0;
  /** Called after each upload with the object and its stored size. */
  onStored: (o: LogObject, bytes: number) => void = () => {};
  /** Called when the stored prefix advanced (checkpoints and GC look then). */
  onProgress: () => void = () => {};
  /** Told of uploads finished, of the store failing and working again, of a takeover; without it these are logged. */
  notify: ((notice: DeviceNotice) => void) | undefined;
  /** Uploads since the backlog was last empty, for the progress notice. */
  private batch = { objects: 0, bytes: 0, since: 0 };

  constructor(
    private readonly v: Volume,
    private readonly writer: LogWriter,
    private readonly committer: Committer,
    private readonly cache: ReadCache,
    private readonly guard: LeaseGuard,
    private readonly concurrency: number,
    storedPrefix: number,
  ) {
    this.storedPrefix = storedPrefix;
    this.checkedPrefix = storedPrefix;
  }

  /** Queues a sealed object that is durable locally. */
  enqueue(o: LogObject): void {
    if (o.state !== SEALED || this.queue.includes(o) || o.upload !== undefined) return;
    this.queue.push(o);
    this.queue.sort((a, b) => a.seq - b.seq);
    this.pump();
  }

  /** Objects sealed and not yet stored. */
  get backlog(): number {
    return this.queue.length + this.uploadsInFlight;
  }

  private pump(): void {
    if (this.stopped || this.fenced !== undefined || this.retryTimer !== undefined) return;
    if (!this.readied) {
      this.guard.ready().then(
        () => {
          this.readied = true;
          this.pump();
        },
        (e: unknown) => this.failed(e),
      );
      return;
    }
    while (this.running < this.concurrency && this.queue.length > 0) {
      const o = this.queue.shift()!;
      this.running++;
      o.upload = this.uploadOne(o).finally(() => {
        o.upload = undefined;
        this.running--;
        this.pump();
      });
    }
  }

  private async uploadOne(o: LogObject): Promise<void> {
    const { file, codec, store, stats } = this.v;
    const data = new Uint8Array(o.dataLength);
    if (o.dataLength > 0) file.read(o.slot!, 0, data, 0, o.dataLength);
    const key = this.v.keyOf(o.seq, o.epoch);
    this.uploadsInFlight++;
    try {
      // Handed over (sealed on a worker without a copy): the object is read again from the cache for a retry.
      // The MD5 a store sends along is computed with the seal (on the worker for a big object), not by put.
      const wantsMd5 = store.putDigest === "md5";
      const { body, layout, md5 } = await codec.encode({ volumeId: this.v.volumeId, kind: KIND_LOG, seq: o.seq, epoch: o.epoch, flags: o.continued ? FLAG_CONTINUED : 0 }, o.extents ?? [], data, true, wantsMd5);
      await store.put(key, body, md5);
      stats.uploads++;
      stats.uploadedBytes += body.length;
      stats.logBytes += body.length;
      stats.uploadedPlainBytes += o.dataLength;
      o.layout = layout;
    } catch (e) {
      this.uploadsInFlight--;
      this.queue.unshift(o);
      this.queue.sort((a, b) => a.seq - b.seq);
      this.failed(e, key);
      return;
    }
    this.uploadsInFlight--;
    stats.succeeded();
    if (this.backoffMs > 0) {
      const message = `the store works again; uploads resumed (${this.backlog} log object${this.backlog === 1 ? "" : "s"} left)`;
      if (this.notify === undefined) this.v.log.log("info", `objstore: ${message}`, { store: store.description });
      else this.notify({ kind: "recovered", message });
    }
    this.backoffMs = 0;
    const layout = o.layout!;
    o.state = STORED;
    this.writer.stored(o);
    o.extents = undefined;
    o.present = new Uint8Array(Math.ceil(o.chunkCount / 8)).fill(0xff);
    o.rowDirty = true;
    this.cache.adopt(o);
    this.committer.commit(200).catch(() => {});
    this.onStored(o, objectBytes(layout));
    if (this.batch.objects === 0) this.batch.since = Date.now();
    this.batch.objects++;
    this.batch.bytes += objectBytes(layout);
    if (this.backlog === 0) {
      const { objects, bytes, since } = this.batch;
      this.notify?.({ kind: "progress", message: `uploaded ${objects} log object${objects === 1 ? "" : "s"}, ${formatSize(bytes)} sent in ${((Date.now() - since) / 1000).toFixed(1)} s` });
      this.batch = { objects: 0, bytes: 0, since: 0 };
    }
    this.advance();
  }

  private failed(e: unknown, key?: string): void {
    const message = e instanceof Error ? e.message : String(e);
    this.v.stats.failed(key === undefined ? message : `upload of ${key} to ${this.v.store.description}: ${message}`);
    // Uploads in flight together fail together: they count as one failed round.
    if (this.retryTimer === undefined && !this.stopped) {
      this.failures++;
      this.lastFailureAt = Date.now();
      this.backoffMs = Math.min(BACKOFF_MAX_MS, this.backoffMs === 0 ? BACKOFF_MIN_MS : this.backoffMs * 2);
      if (this.notify === undefined) {
        this.v.log.log("warn", "objstore: an upload failed; the log objects stay in the local cache and are retried", { retryInSeconds: this.backoffMs / 1000, error: message });
      } else if (this.backoffMs === BACKOFF_MIN_MS) {
        this.notify({ kind: "error", message: `uploads failing (${this.backlog} log object${this.backlog === 1 ? "" : "s"} wait in the local cache, retried with backoff): ${message}` });
      }
      // A FLUSH waiting for the store tries on its own schedule (1 s, 2 s, ...), not the background backoff's.
      const waiting = this.waiters.length === 0 ? undefined : Math.min(...this.waiters.map((w) => w.failuresAtStart));
      const delay = waiting === undefined ? this.backoffMs : Math.min(this.backoffMs, BACKOFF_MIN_MS * 2 ** Math.max(0, this.failures - waiting - 1));
      this.retryTimer = setTimeout(() => {
        this.retryTimer = undefined;
        this.pump();
      }, delay);
    }
    this.settleWaiters();
  }

  /** Moves the stored prefix over every stored (or since deleted) object, then checks the lease for the waiters. */
  private advance(): void {
    const before = this.storedPrefix;
    for (;;) {
      const next = this.storedPrefix + 1;
      if (next >= this.writer.open.seq) break;
      const o = this.v.objects.get(next);
      if (o !== undefined && o.state !== STORED) break;
      this.storedPrefix = next;
    }
    if (this.storedPrefix !== before) this.onProgress();
    // A FLUSH waiting needs a check that started after its objects were stored; otherwise a check every couple of
    // seconds of uploading is enough for a fenced writer to notice soon (each is a request the store must serve).
    if (this.waiters.length > 0 || Date.now() - this.lastCheckAt >= CHECK_EVERY_MS) this.startCheck();
  }

  /** A lease check covering the current stored prefix (one at a time; a request meanwhile runs one more). */
  private startCheck(): void {
    if (this.checking !== undefined) {
      this.checkAgain = true;
      return;
    }
    const covers = this.storedPrefix;
    this.lastCheckAt = Date.now();
    this.checking = this.guard
      .check()
      .then((fenced) => {
        if (fenced !== undefined) this.fence(fenced);
        else this.checkedPrefix = Math.max(this.checkedPrefix, covers);
      })
      .catch((e: unknown) => this.failed(e))
      .finally(() => {
        this.checking = undefined;
        this.settleWaiters();
        if (this.checkAgain) {
          this.checkAgain = false;
          this.startCheck();
        }
      });
  }

  private fence(reason: string): void {
    if (this.fenced !== undefined) return;
    this.fenced = reason;
    this.queue.length = 0;
    this.v.stats.failed(reason);
    this.v.log.log("error", `objstore: ${reason}`);
    this.notify?.({ kind: "error", message: reason });
  }

  private settleWaiters(): void {
    const keep: Waiter[] = [];
    for (const w of this.waiters) {
      if (this.fenced !== undefined) w.reject(new DeviceError("EIO", `objstore device: ${this.fenced}`));
      else if (w.seq <= this.checkedPrefix) w.resolve();
      else if (this.failures - w.failuresAtStart >= w.attempts) {
        w.reject(new DeviceError("EIO", `objstore device: cannot upload to ${this.v.store.description}: ${this.v.stats.lastError ?? "the store keeps failing"}`));
      } else keep.push(w);
    }
    this.waiters = keep;
  }

  /**
   * Resolves once every object up to `seq` is stored and a lease check after that passed; rejects with EIO after
   * `attempts` failed uploads, or when fenced.
   */
  waitStored(seq: number, attempts = REMOTE_FLUSH_ATTEMPTS): Promise<void> {
    if (this.fenced !== undefined) return Promise.reject(new DeviceError("EIO", `objstore device: ${this.fenced}`));
    if (seq <= this.checkedPrefix) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      this.waiters.push({ seq, failuresAtStart: this.failures, attempts, resolve, reject });
      if (seq <= this.storedPrefix) this.startCheck();
      // A FLUSH arriving during a long backoff tries again now (at most once a second), not at the timer.
      if (this.retryTimer !== undefined && Date.now() - this.lastFailureAt >= BACKOFF_MIN_MS) {
        clearTimeout(this.retryTimer);
        this.retryTimer = undefined;
        this.pump();
      }
    });
  }

  /** Stops uploading; waits for uploads in flight. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.retryTimer !== undefined) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    const inFlight = [...this.v.objects.values()].map((o) => o.upload).filter((p): p is Promise<void> => p !== undefined);
    await Promise.allSettled(inFlight);
    await this.checking?.catch(() => {});
  }

  /** Starts again after `stop` (close uploads what it can with the uploader it stopped). */
  resume(): void {
    this.stopped = false;
    this.pump();
  }
}
