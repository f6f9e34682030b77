/**
 * Checkpoints: the map and the object table as they were right after some log object S was sealed, stored as
 * `<volume>/checkpoints/<S>.<epoch>`, so that a cold open reads one checkpoint and replays only the log after it.
 * The map is frozen at the seal (copy on write, extent-map.ts) and serialized once every object up to S is stored.
 *
 * After a checkpoint, what nothing needs any more is deleted from the store: log objects up to S that neither it nor
 * the checkpoint before it nor any snapshot refers to (the GC's compacted objects, and objects overwritten
 * entirely), and older checkpoints no snapshot pins. Keeping the previous checkpoint's objects one round longer
 * means that a copy of the bucket made object by object while a checkpoint was written still holds a complete
 * state. Objects after S are never deleted: replay walks them.
 *
 * A checkpoint is due after max(32 objects, 16 times the last checkpoint) of log has been stored since the last
 * one (checkpoints then cost at most a few percent of the upload), or once the GC has compacted enough to be worth
 * deleting, or when asked (a new writer epoch, a snapshot, close).
 */
import { decodeCheckpoint, encodeCheckpoint, type CheckpointObject } from "./codec/checkpoint.ts";
import { KIND_CHECKPOINT, KIND_LOG } from "./codec/log-object.ts";
import type { Committer } from "./committer.ts";
import { checkpointKey, checkpointPrefix, logPrefix, parseSequenced } from "./layout.ts";
import type { LogWriter } from "./log-writer.ts";
import type { MapPage } from "./map-page.ts";
import { STORED } from "./objects.ts";
import type { ReadCache } from "./read-cache.ts";
import type { Uploader } from "./uploader.ts";
import type { Volume } from "./volume.ts";
import { HEAD_ROW, packRefs, PREVIOUS_ROW } from "./refs.ts";

/** A checkpoint in the store, and the log objects its map refers to. */
export interface CheckpointRef {
  readonly seq: number;
  readonly epoch: number;
  readonly refs: ReadonlySet<number>;
  readonly bytes: number;
}

export class Checkpointer {
  newest: CheckpointRef | undefined;
  previous: CheckpointRef | undefined;
  /** Stored log bytes since the newest checkpoint. */
  private bytesSince = 0;
  private running: Promise<CheckpointRef> | undefined;
  private forced = false;
  /** Log objects the GC compacted, deleted after the next checkpoint. */
  readonly compacted = new Set<number>();
  deletedObjects = 0;
  deletedBytes = 0;
  checkpointBytes = 0;

  constructor(
    private readonly v: Volume,
    private readonly writer: LogWriter,
    private readonly uploader: Uploader,
    private readonly committer: Committer,
    private readonly cache: ReadCache,
    newest: CheckpointRef | undefined,
    previous: CheckpointRef | undefined,
  ) {
    this.newest = newest;
    this.previous = previous;
  }

  /** The uploader stored `bytes` more of log. */
  noteStored(bytes: number): void {
    this.bytesSince += bytes;
  }

  private due(): boolean {
    const last = this.newest?.bytes ?? 0;
    if (this.bytesSince >= Math.max(32 * this.v.objectSize, 16 * last)) return true;
    let compacted = 0;
    for (const seq of this.compacted) compacted += this.v.objects.get(seq)?.dataLength ?? 0;
    return compacted >= Math.max(8 * this.v.objectSize, 4 * last) && this.bytesSince > 0;
  }

  get busy(): boolean {
    return this.running !== undefined;
  }

  /** Starts a checkpoint when one is due (called as uploads progress). */
  maybe(): void {
    if (this.running === undefined && this.uploader.fenced === undefined && (this.forced || this.due())) void this.start().catch(() => {});
  }

  /**
   * A checkpoint of everything written before this call; resolves once it is in the store. `attempts` failed
   * upload rounds make it fail with EIO (the default waits for the store as long as it takes).
   */
  async force(attempts = Infinity, options: { readonly now?: boolean } = {}): Promise<CheckpointRef> {
    if (this.running !== undefined) await this.running.catch(() => {});
    this.graceless = options.now === true;
    // Nothing written since the newest checkpoint: it is the checkpoint asked for (a checkpoint is never rewritten).
    if (this.current && this.newest !== undefined && this.newest.epoch === this.v.epoch) {
      if (this.graceless) await this.collect();
      this.graceless = false;
      return this.newest;
    }
    this.forced = true;
    return this.start(attempts);
  }

  /** The next collection also deletes what only the previous checkpoint refers to (reclaim: space back now). */
  private graceless = false;

  /** Whether everything stored is covered by the newest checkpoint. */
  get current(): boolean {
    return this.newest !== undefined && this.newest.seq >= this.writer.open.seq - 1 && this.writer.openEmpty;
  }

  private start(attempts = Infinity): Promise<CheckpointRef> {
    if (this.running !== undefined) return this.running;
    this.forced = false;
    const sealed = this.writer.seal();
    const seq = sealed?.seq ?? this.writer.open.seq - 1;
    // Frozen at the seal: later writes copy the pages they change first.
    this.v.map.freeze();
    const job = this.write(seq, attempts).finally(() => {
      this.v.map.thaw();
      this.running = undefined;
    });
    this.running = job;
    return job;
  }

  private async write(seq: number, attempts: number): Promise<CheckpointRef> {
    const { map, codec, store, stats } = this.v;
    await this.uploader.waitStored(seq, attempts);
    // What the checkpoint refers to comes from its own pages, not from the running live counts: an object left out
    // here is deleted.
    const pages: Array<[number, MapPage]> = [];
    const live = new Map<number, number>();
    for (const index of map.pageIndexes()) {
      const page = map.frozenPage(index);
      if (page === undefined || page.count === 0) continue;
      pages.push([index, page]);
      page.forEach((start, end, q, _pos, zero) => {
        if (!zero) live.set(q, (live.get(q) ?? 0) + (end - start));
      });
    }
    map.thaw();
    const objects: CheckpointObject[] = [...live].sort((a, b) => a[0] - b[0]).map(([q, bytes]) => {
      const o = this.v.objects.get(q);
      if (o?.layout === undefined) throw new Error(`objstore: checkpoint ${seq} refers to log object ${q}, which is not stored`);
      return { seq: q, epoch: o.epoch, dataLength: o.dataLength, live: bytes, layout: o.layout };
    });
    const data = encodeCheckpoint({ objects, pages });
    const epoch = this.v.epoch;
    const { body } = await codec.encode({ volumeId: this.v.volumeId, kind: KIND_CHECKPOINT, seq, epoch }, [], data, true);
    await store.put(checkpointKey(this.v.name, seq, epoch), body);
    stats.uploads++;
    stats.uploadedBytes += body.length;
    this.checkpointBytes += body.length;
    const ref: CheckpointRef = { seq, epoch, refs: new Set(live.keys()), bytes: body.length };
    const previous = this.newest;
    this.previous = previous;
    this.newest = ref;
    this.bytesSince = 0;
    this.v.catalog.durably(() => {
      this.v.catalog.saveSnapshot({ name: HEAD_ROW, seq, epoch, refs: packRefs(ref.refs) });
      if (previous !== undefined) this.v.catalog.saveSnapshot({ name: PREVIOUS_ROW, seq: previous.seq, epoch: previous.epoch, refs: packRefs(previous.refs) });
      this.v.catalog.setMeta("checkpoint", `${seq}.${epoch}`);
    });
    await this.collect();
    return ref;
  }

  /** Deletes what the newest checkpoint made unneeded (see the file comment). */
  private async collect(): Promise<void> {
    const newest = this.newest!;
    const previous = this.graceless ? undefined : this.previous;
    this.graceless = false;
    const pins = this.v.pins;
    const kept = (seq: number) => newest.refs.has(seq) || previous?.refs.has(seq) === true || pins.objects.has(seq);
    const doomed: number[] = [];
    for (const o of this.v.objects.values()) {
      if (o.seq > newest.seq || o.state !== STORED || !this.v.owner(o.seq).own) continue;
      if (kept(o.seq) || o.pins > 0) continue;
      doomed.push(o.seq);
    }
    const deletions: Array<Promise<void>> = [];
    for (const seq of doomed) {
      const o = this.v.objects.get(seq)!;
      deletions.push(
        this.v.store.delete(this.v.keyOf(o.seq, o.epoch)).then(() => {
          this.deletedObjects++;
          this.deletedBytes += o.dataLength;
          const slot = this.cache.forget(o);
          this.v.objects.delete(o.seq);
          this.compacted.delete(o.seq);
          this.committer.forget(o.seq);
          if (slot !== undefined) this.committer.commit(0).then(() => this.v.file.releaseSlot(slot), () => {});
        }),
      );
    }
    // Older checkpoints, and log objects of this volume the table does not know (fenced writers' objects, or ones
    // left by a crash between an upload and its commit under another epoch) up to the checkpoint.
    const prefix = checkpointPrefix(this.v.name);
    for await (const info of this.v.store.list(prefix)) {
      const id = parseSequenced(info.key.slice(prefix.length));
      const same = (c: CheckpointRef | undefined) => c !== undefined && c.seq === id?.seq && c.epoch === id.epoch;
      if (id === undefined || same(newest) || same(previous) || pins.checkpoints.has(`${id.seq}.${id.epoch}`)) continue;
      if (id.epoch > newest.epoch || (id.epoch === newest.epoch && id.seq > newest.seq)) continue;
      deletions.push(this.v.store.delete(info.key));
    }
    const logs = logPrefix(this.v.name);
    for await (const info of this.v.store.list(logs)) {
      const id = parseSequenced(info.key.slice(logs.length));
      if (id === undefined || id.seq > newest.seq) continue;
      const known = this.v.objects.get(id.seq);
      if ((known !== undefined && known.epoch === id.epoch) || kept(id.seq)) continue;
      deletions.push(this.v.store.delete(info.key));
    }
    const results = await Promise.allSettled(deletions);
    const failed = results.filter((r) => r.status === "rejected").length;
    if (failed > 0) this.v.log.log("warn", "objstore: some unneeded objects could not be deleted; the next checkpoint tries again", { failed });
    if (doomed.length > 0) await this.committer.commit(0);
  }

  /** Reads a checkpoint's content from the store (for snapshots made elsewhere and for the refs of a snapshot). */
  static async load(v: Pick<Volume, "store" | "codec">, owner: { name: string; volumeId: Uint8Array }, seq: number, epoch: number): Promise<ReturnType<typeof decodeCheckpoint> & { bytes: number }> {
    const key = checkpointKey(owner.name, seq, epoch);
    const got = await v.store.get(key);
    if (got === undefined) throw new Error(`checkpoint ${key} is missing from ${v.store.description}`);
    const { layout } = await v.codec.decodeHeader(got.body, { volumeId: owner.volumeId, kind: KIND_CHECKPOINT, seq, epoch }, () => Promise.resolve(new Uint8Array(0)));
    const data = layout.chunks.length === 0 ? new Uint8Array(0) : await v.codec.decodeChunks(owner.volumeId, layout, 0, got.body.subarray(layout.dataStart));
    return { ...decodeCheckpoint(data, key), bytes: got.body.length };
  }
}

export { KIND_LOG };
