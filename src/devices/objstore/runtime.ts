/**
 * An open objstore volume at work: its parts wired together (committer, cache, log writer, uploader, checkpointer,
 * GC, lease), the background tick that seals old objects and starts checkpoints and GC cycles, and the operations
 * that span several parts: FLUSH, close, reclaim, snapshots.
 */
import { DeviceError, type ReclaimResult } from "../device.ts";
import { ioError } from "../io-error.ts";
import type { Checkpointer } from "./checkpointer.ts";
import type { Committer } from "./committer.ts";
import type { Collector } from "./gc.ts";
import type { HeldLease } from "./lease.ts";
import type { LogWriter } from "./log-writer.ts";
import { SEALED, STORED } from "./objects.ts";
import type { ReadCache } from "./read-cache.ts";
import { deleteSnapshot, listSnapshots, readSnapshot, recordSnapshot, SnapshotError, type SnapshotRecord, checkSnapshotName } from "./snapshots.ts";
import type { Uploader } from "./uploader.ts";
import type { Volume } from "./volume.ts";

export interface RuntimeParts {
  readonly v: Volume;
  readonly committer: Committer;
  readonly cache: ReadCache;
  readonly writer: LogWriter;
  /** Absent when read-only. */
  readonly uploader?: Uploader;
  readonly checkpointer?: Checkpointer;
  readonly gc?: Collector;
  readonly lease?: HeldLease;
  /** Seal an open object after this long (--objstore-flushevery); 0: never on a timer. */
  readonly flushEveryMs: number;
  /** Keep cached chunks of stored objects across restarts (--objstore-persistcache). */
  readonly persistCache: boolean;
}

const TICK_MS = 200;

export class ObjstoreRuntime {
  readonly v: Volume;
  readonly committer: Committer;
  readonly cache: ReadCache;
  readonly writer: LogWriter;
  readonly uploader: Uploader | undefined;
  readonly checkpointer: Checkpointer | undefined;
  readonly gc: Collector | undefined;
  readonly lease: HeldLease | undefined;
  readonly flushEveryMs: number;
  readonly persistCache: boolean;
  private timer: ReturnType<typeof setInterval> | undefined;
  /** When everything written had last reached the store (ms since the epoch; 0: not yet). */
  lastCleanAt = 0;
  /** Bytes left in the local cache at the last close that could not reach the store (and where they are). */
  unuploadedAtClose = 0;

  constructor(parts: RuntimeParts) {
    this.v = parts.v;
    this.committer = parts.committer;
    this.cache = parts.cache;
    this.writer = parts.writer;
    this.uploader = parts.uploader;
    this.checkpointer = parts.checkpointer;
    this.gc = parts.gc;
    this.lease = parts.lease;
    this.flushEveryMs = parts.flushEveryMs;
    this.persistCache = parts.persistCache;
    this.committer.onDurable = (states) => {
      for (const [o, state, slot] of states) {
        o.durableState = state;
        o.durableSlot = slot;
        if (state === SEALED && o.state === SEALED) this.uploader?.enqueue(o);
      }
      this.cache.evictAsNeeded();
    };
    if (this.uploader !== undefined) {
      this.uploader.onStored = (_o, bytes) => this.checkpointer?.noteStored(bytes);
      this.uploader.onProgress = () => {
        if (this.writer.pendingBytes() === 0) this.lastCleanAt = Date.now();
        this.checkpointer?.maybe();
        this.gc?.maybe();
      };
    }
  }

  /** Starts the background work; objects sealed before a restart go to the uploader. */
  start(): void {
    if (this.uploader === undefined) return;
    for (const o of this.v.objects.sorted()) if (o.state === SEALED && o.durableState === SEALED) this.uploader.enqueue(o);
    this.timer = setInterval(() => this.tick(), TICK_MS);
    this.timer.unref?.();
  }

  private tick(): void {
    if (this.uploader?.fenced !== undefined) return;
    // --objstore-flushevery 0 (the Go original's "no auto-flush"): objects are sealed only when full, by a remote
    // FLUSH, a snapshot, reclaim or close.
    if (this.flushEveryMs > 0) this.writer.sealIfOlder(this.flushEveryMs);
    this.checkpointer?.maybe();
    this.gc?.maybe();
  }

  /** Every write so far durable on local disk. */
  async flushLocal(): Promise<void> {
    try {
      await this.committer.commit(0);
    } catch (e) {
      throw ioError("objstore", "flush", this.v.file.path, e);
    }
  }

  /** Every write so far in the store, as a prefix of the log (remote flush mode, snapshots, close). */
  async flushRemote(attempts?: number): Promise<void> {
    if (this.uploader === undefined) return;
    this.writer.seal();
    await this.uploader.waitStored(this.writer.open.seq - 1, attempts);
  }

  /**
   * Close: commit locally, then upload what is left (one try: when the store is down the writes stay in the cache,
   * durable, and the next start uploads them), checkpoint, release the lease, drop clean cached chunks unless the
   * cache is persistent, and release everything.
   */
  async shutDown(): Promise<void> {
    const { v, uploader, committer, cache } = this;
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
    try {
      await this.gc?.stop();
      await committer.commit(0).catch((e: unknown) => v.log.log("error", "objstore: the last local commit failed", { error: String(e) }));
      if (uploader !== undefined && uploader.fenced === undefined) {
        try {
          await this.flushRemote(1);
          if (this.checkpointer !== undefined && !this.checkpointer.current) await this.checkpointer.force(1);
          await this.lease?.release();
          this.unuploadedAtClose = 0;
        } catch (e) {
          this.unuploadedAtClose = this.writer.pendingBytes();
          v.log.log(
            "warn",
            `objstore: ${this.unuploadedAtClose} bytes of log could not be uploaded; they stay in the local cache ${v.file.path} and are uploaded at the next start (the writer lease stays held until then)`,
            { error: e instanceof Error ? e.message : String(e) },
          );
        }
      }
      await uploader?.stop();
      const freed: number[] = [];
      if (!this.persistCache) {
        for (const o of v.objects.values()) {
          if (o.state !== STORED || o.durableState !== STORED || o.slot === undefined || o.pins > 0) continue;
          const slot = cache.forget(o);
          if (slot !== undefined) freed.push(slot);
        }
      }
      await committer.commit(0).catch((e: unknown) => v.log.log("error", "objstore: the last local commit failed", { error: String(e) }));
      for (const slot of freed) v.file.releaseSlot(slot);
      v.file.trimEnd();
    } finally {
      v.file.close();
      v.codec.close();
      v.catalog.close();
      v.store.close();
    }
  }

  /** Compacts what the GC would, then checkpoints, so that unneeded objects are deleted now. */
  async reclaim(): Promise<ReclaimResult> {
    const { checkpointer, gc, uploader } = this;
    if (checkpointer === undefined || uploader === undefined) return { bytes: 0, detail: "nothing to reclaim" };
    await this.flushLocal();
    const before = { objects: checkpointer.deletedObjects, bytes: checkpointer.deletedBytes };
    // Everything stored first: only stored objects can be compacted.
    await this.flushRemote();
    const compacted = (await gc?.runOnce()) ?? 0;
    await this.flushRemote();
    await checkpointer.force(3, { now: true });
    const deleted = checkpointer.deletedObjects - before.objects;
    const plural = (n: number, what: string) => `${n.toLocaleString("en-US")} ${what}${n === 1 ? "" : "s"}`;
    return { bytes: checkpointer.deletedBytes - before.bytes, detail: `${plural(compacted, "log object")} compacted, ${plural(deleted, "log object")} deleted from the store` };
  }

  async createSnapshot(name: string): Promise<SnapshotRecord> {
    checkSnapshotName(name);
    if (this.checkpointer === undefined) throw new DeviceError("EPERM", "objstore device: read-only volumes take no snapshots");
    if ((await readSnapshot(this.v.store, this.v.name, name)) !== undefined) throw new SnapshotError(`volume ${this.v.name} already has a snapshot named ${name}`);
    await this.flushLocal();
    const at = await this.checkpointer.force(3);
    return recordSnapshot(this.v, name, at);
  }

  listSnapshots(): Promise<SnapshotRecord[]> {
    return listSnapshots(this.v.store, this.v.name);
  }

  async deleteSnapshot(name: string): Promise<void> {
    await deleteSnapshot(this.v.store, this.v.name, name);
    this.v.catalog.durably(() => this.v.catalog.deleteSnapshot(name));
    this.v.refreshPins();
  }
}
