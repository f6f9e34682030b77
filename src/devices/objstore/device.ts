/**
 * The objstore device: a log-structured volume in an object store behind a local cache. Writes append to the log
 * (log-writer.ts) and are synchronous; reads resolve the map and read the cache, fetching missing chunks of stored
 * log objects with ranged GETs first (read-cache.ts). FLUSH commits locally, and in remote flush mode also waits
 * until the store holds a prefix of the log that includes every write before it (uploader.ts).
 */
import {
  checkOpen,
  checkRange,
  DeviceError,
  type BlockDevice,
  type DeviceCapabilities,
  type Extent,
  type ReclaimResult,
  type UnsettledData,
} from "../device.ts";
import type { FlushMode } from "./layout.ts";
import type { MapPiece } from "./map-page.ts";
import type { LogObject } from "./objects.ts";
import type { ObjstoreRuntime } from "./runtime.ts";
import { deviceStats } from "./stats.ts";
import type { SnapshotRecord } from "./snapshots.ts";

/** Reads up to this size that need no fetch go into a reused buffer; others get their own. */
const SCRATCH_MAX = 4 << 20;
/** How long a write waits for uploads to make room under --objstore-diskcache before it fails with EIO. */
const FULL_CACHE_PATIENCE_MS = 30_000;
/**
 * Sequential reads that fetch read ahead of themselves: a window that doubles from READAHEAD_MIN to READAHEAD_MAX,
 * fetched again whenever less than half of it is left ahead of the reader, so the GETs are big (a whole log object
 * where the window covers one) and already in flight when reads at any queue depth reach them.
 */
const READAHEAD_MIN = 2 << 20;
const READAHEAD_MAX = 16 << 20;

export interface ObjstoreDeviceSettings {
  readonly blockSize: number;
  readonly flushMode: FlushMode;
  readonly readOnly: boolean;
}

export class ObjstoreDevice implements BlockDevice {
  readonly kind = "objstore";
  readonly size: number;
  readonly blockSize: number;
  readonly capabilities: DeviceCapabilities;
  /** The volume's parts, for the control path (snapshots) and tests. */
  readonly runtime: ObjstoreRuntime;
  private readonly settings: ObjstoreDeviceSettings;
  private closed = false;
  private closing: Promise<void> | undefined;
  private scratch = new Uint8Array(64 * 1024);
  private readonly pieceScratch: MapPiece[] = [];
  private lastReadEnd = -1;
  private readahead = READAHEAD_MIN;
  /** Where the bytes fetched (or being fetched) ahead of a sequential reader end; 0 when no reader is fetching. */
  private readaheadUntil = 0;

  constructor(runtime: ObjstoreRuntime, settings: ObjstoreDeviceSettings) {
    this.runtime = runtime;
    this.settings = settings;
    this.size = runtime.v.manifest.size;
    this.blockSize = settings.blockSize;
    this.capabilities = { fua: false, trim: true, fastZero: true, multiConn: true, persistent: true, readOnly: settings.readOnly };
  }

  read(offset: number, length: number): Uint8Array | Promise<Uint8Array> {
    checkOpen(this.closed, this.kind);
    checkRange(this.size, offset, length);
    // The pieces array is reused: this path is synchronous to the end.
    const pieces = this.runtime.v.map.lookup(offset, length, this.pieceScratch);
    const sequential = offset === this.lastReadEnd;
    this.lastReadEnd = offset + length;
    if (this.anyMissing(pieces)) {
      pieces.length = 0;
      return this.readSlow(offset, length, sequential);
    }
    const out = length > SCRATCH_MAX ? new Uint8Array(length) : this.readBuffer(length);
    this.copy(pieces, offset, out);
    pieces.length = 0;
    if (sequential && offset < this.readaheadUntil) this.readAhead(offset, this.lastReadEnd);
    return out;
  }

  /** A reused buffer: the contract lets a result be a view valid until the caller consumed it in this turn. */
  private readBuffer(length: number): Uint8Array {
    if (this.scratch.length < length) this.scratch = new Uint8Array(Math.max(length, this.scratch.length * 2));
    return this.scratch.subarray(0, length);
  }

  /** Whether any data piece's bytes are not in the cache. */
  private anyMissing(pieces: readonly MapPiece[]): boolean {
    const { v, cache } = this.runtime;
    for (const piece of pieces) {
      if (piece.kind !== "data") continue;
      const o = v.objects.get(piece.seq);
      if (o === undefined || !cache.has(o, piece.pos, piece.length)) return true;
    }
    return false;
  }

  /** Data pieces whose bytes are not in the cache. */
  private missing(pieces: readonly MapPiece[]): Array<{ o: LogObject; piece: MapPiece }> {
    const out: Array<{ o: LogObject; piece: MapPiece }> = [];
    for (const piece of pieces) {
      if (piece.kind !== "data") continue;
      const o = this.runtime.v.objects.get(piece.seq);
      if (o === undefined) throw new DeviceError("EIO", `objstore device: the map names log object ${piece.seq}, which the volume does not know`);
      if (!this.runtime.cache.has(o, piece.pos, piece.length)) out.push({ o, piece });
    }
    return out;
  }

  private copy(pieces: readonly MapPiece[], offset: number, out: Uint8Array): void {
    const { v, cache } = this.runtime;
    for (const piece of pieces) {
      const at = piece.offset - offset;
      if (piece.kind !== "data") out.fill(0, at, at + piece.length);
      else cache.read(v.objects.get(piece.seq)!, piece.pos, out, at, piece.length);
    }
  }

  /**
   * A read that waits for fetches: fetch what is missing, then read it all in one synchronous step, against the map
   * as it is then (a write meanwhile wins, as if it had come first). Stored objects never change, so bytes fetched
   * stay right however long the fetch takes; when the cache is too small to keep them until the read is done, they
   * are fetched into this read's own buffers instead.
   */
  private async readSlow(offset: number, length: number, sequential: boolean): Promise<Uint8Array> {
    const out = new Uint8Array(length);
    if (sequential) this.readAhead(offset, offset + length);
    const own = new Map<number, Array<{ pos: number; bytes: Uint8Array }>>();
    const held = (piece: MapPiece) => own.get(piece.seq)?.find((f) => f.pos <= piece.pos && piece.pos + piece.length <= f.pos + f.bytes.length);
    for (let attempt = 0; ; attempt++) {
      const pieces = this.runtime.v.map.lookup(offset, length);
      const missing = this.missing(pieces).filter(({ piece }) => held(piece) === undefined);
      if (missing.length === 0) {
        const { v, cache } = this.runtime;
        for (const piece of pieces) {
          const at = piece.offset - offset;
          if (piece.kind !== "data") out.fill(0, at, at + piece.length);
          else {
            const o = v.objects.get(piece.seq)!;
            if (cache.has(o, piece.pos, piece.length)) cache.read(o, piece.pos, out, at, piece.length);
            else {
              const f = held(piece)!;
              out.set(f.bytes.subarray(piece.pos - f.pos, piece.pos - f.pos + piece.length), at);
            }
          }
        }
        return out;
      }
      if (attempt >= 4) throw new DeviceError("EIO", "objstore device: the volume keeps changing under this read");
      if (attempt === 0) await this.fetch(missing);
      else {
        await Promise.all(
          missing.map(async ({ o, piece }) => {
            let list = own.get(o.seq);
            if (list === undefined) own.set(o.seq, (list = []));
            list.push({ pos: piece.pos, bytes: await this.runtime.cache.fetch(o, piece.pos, piece.length) });
          }),
        );
      }
    }
  }

  /** Fetches the missing pieces, one ranged GET per run of adjacent missing chunks of an object. */
  private async fetch(missing: ReadonlyArray<{ o: LogObject; piece: MapPiece }>): Promise<void> {
    const byObject = new Map<LogObject, Array<[number, number]>>();
    for (const { o, piece } of missing) {
      let list = byObject.get(o);
      if (list === undefined) byObject.set(o, (list = []));
      list.push([piece.pos, piece.pos + piece.length]);
    }
    const jobs: Promise<void>[] = [];
    for (const [o, ranges] of byObject) {
      ranges.sort((a, b) => a[0] - b[0]);
      // Ranges a chunk or less apart are fetched together: one GET instead of two.
      const merged: Array<[number, number]> = [];
      for (const r of ranges) {
        const last = merged[merged.length - 1];
        if (last !== undefined && r[0] <= last[1] + this.runtime.v.chunkSize) last[1] = Math.max(last[1], r[1]);
        else merged.push([r[0], r[1]]);
      }
      o.pins++;
      jobs.push(Promise.all(merged.map(([from, to]) => this.runtime.cache.ensure(o, from, to - from))).then(() => {}).finally(() => o.pins--));
    }
    await Promise.all(jobs);
  }

  /**
   * Fetches ahead of a sequential read of [start, end) when less than half the window is left ahead of it: from
   * where the last fetch ahead ended (or the read itself, when it is past that) to a full, doubled window after the
   * read. What a read needs that is already in flight it waits for; it does not fetch it again.
   */
  private readAhead(start: number, end: number): void {
    if (this.readaheadUntil < start || this.readaheadUntil > end + READAHEAD_MAX) {
      // A reader elsewhere than the last one fetching ahead: a new run, from this read on, with the smallest window.
      this.readahead = READAHEAD_MIN;
      this.readaheadUntil = start;
    } else if (this.readaheadUntil - end >= this.readahead / 2) return;
    else this.readahead = Math.min(READAHEAD_MAX, this.readahead * 2);
    const from = this.readaheadUntil;
    // Ends on a multiple of the object size: a volume written sequentially has its objects there, so each window
    // fetches whole objects (one GET each) instead of cutting one into two GETs at every window's edge.
    const objectSize = this.runtime.v.objectSize;
    const to = Math.min(this.size, Math.ceil((end + this.readahead) / objectSize) * objectSize);
    if (to <= from) return;
    this.readaheadUntil = to;
    this.warm(from, to - from).catch(() => {});
  }

  private async warm(offset: number, length: number): Promise<void> {
    const missing = this.missing(this.runtime.v.map.lookup(offset, length));
    if (missing.length > 0) await this.fetch(missing);
  }

  /** NBD_CMD_CACHE: fetches the range into the cache now (up to half the cache bound), so reads of it do not wait. */
  async cache(offset: number, length: number): Promise<void> {
    checkOpen(this.closed, this.kind);
    checkRange(this.size, offset, length);
    const bound = this.runtime.cache.bound;
    await this.warm(offset, bound === 0 ? length : Math.min(length, Math.floor(bound / 2)));
  }

  write(offset: number, data: Uint8Array): void | Promise<void> {
    this.checkWritable(offset, data.length);
    if (this.mustWait(data.length)) return this.writeLater(offset, data.slice());
    this.runtime.writer.write(offset, data);
  }

  private async writeLater(offset: number, data: Uint8Array): Promise<void> {
    await this.room(data.length);
    this.checkWritable(offset, data.length);
    this.runtime.writer.write(offset, data);
  }

  trim(offset: number, length: number): void | Promise<void> {
    return this.writeZeroes(offset, length);
  }

  /** Zeroing records a zero extent over what the volume holds; GC gives the space back in the store. */
  writeZeroes(offset: number, length: number): void | Promise<void> {
    this.checkWritable(offset, length);
    this.runtime.writer.zero(offset, length);
  }

  private checkWritable(offset: number, length: number): void {
    checkOpen(this.closed, this.kind);
    checkRange(this.size, offset, length);
    if (this.settings.readOnly) throw new DeviceError("EPERM", "objstore device: this volume is open read-only (a snapshot)");
    const fenced = this.runtime.uploader?.fenced;
    if (fenced !== undefined) throw new DeviceError("EIO", `objstore device: ${fenced}`);
  }

  private mustWait(length: number): boolean {
    const bound = this.runtime.cache.bound;
    return bound > 0 && this.runtime.writer.pendingBytes() + length > bound;
  }

  /** Waits until uploads leave room for `length` more bytes under the cache bound, or fails with EIO. */
  private async room(length: number): Promise<void> {
    const started = Date.now();
    while (this.mustWait(length)) {
      this.runtime.writer.seal();
      if (Date.now() - started > FULL_CACHE_PATIENCE_MS) {
        throw new DeviceError(
          "EIO",
          `objstore device: the local cache is full of log objects not yet uploaded (${this.runtime.v.stats.lastError ?? "the store is slow"}); raise --objstore-diskcache or fix the store`,
        );
      }
      await Bun.sleep(50);
    }
  }

  extents(offset: number, length: number): readonly Extent[] {
    checkOpen(this.closed, this.kind);
    checkRange(this.size, offset, length);
    const out: Extent[] = [];
    for (const piece of this.runtime.v.map.lookup(offset, length)) {
      const hole = piece.kind !== "data";
      const last = out[out.length - 1];
      if (last !== undefined && last.hole === hole) out[out.length - 1] = { length: last.length + piece.length, hole, zero: hole };
      else out.push({ length: piece.length, hole, zero: hole });
    }
    return out;
  }

  async flush(): Promise<void> {
    checkOpen(this.closed, this.kind);
    if (this.settings.readOnly) return;
    const fenced = this.runtime.uploader?.fenced;
    if (fenced !== undefined) throw new DeviceError("EIO", `objstore device: ${fenced}`);
    await this.runtime.flushLocal();
    if (this.settings.flushMode === "remote") await this.runtime.flushRemote();
  }

  close(): Promise<void> {
    this.closed = true;
    this.closing ??= this.runtime.shutDown();
    return this.closing;
  }

  /** Compacts now what the GC would compact later, checkpoints, and deletes what nothing needs any more. */
  async reclaim(): Promise<ReclaimResult> {
    checkOpen(this.closed, this.kind);
    if (this.settings.readOnly) return { bytes: 0, detail: "read-only snapshot: nothing to reclaim" };
    return this.runtime.reclaim();
  }

  /**
   * Written and durable in the local cache, not yet in the store: while open, what waits for upload; after close,
   * what the close could not upload (the store was down), so the shutdown can say how much and where.
   */
  unsettled(): UnsettledData | undefined {
    if (this.settings.readOnly) return undefined;
    const { v, writer } = this.runtime;
    const bytes = this.closed ? this.runtime.unuploadedAtClose : writer.pendingBytes();
    return bytes === 0 ? undefined : { bytes, keptIn: v.file.path, destination: `goes up to ${v.store.description} at the next start` };
  }

  stats() {
    return deviceStats(this.runtime);
  }

  /** Snapshot `name` of everything written before this call (the control path calls this on a running volume). */
  createSnapshot(name: string): Promise<SnapshotRecord> {
    checkOpen(this.closed, this.kind);
    if (this.settings.readOnly) throw new DeviceError("EPERM", "objstore device: a snapshot cannot be taken of a read-only snapshot");
    return this.runtime.createSnapshot(name);
  }

  listSnapshots(): Promise<SnapshotRecord[]> {
    checkOpen(this.closed, this.kind);
    return this.runtime.listSnapshots();
  }

  deleteSnapshot(name: string): Promise<void> {
    checkOpen(this.closed, this.kind);
    return this.runtime.deleteSnapshot(name);
  }
}
