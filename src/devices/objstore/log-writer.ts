/**
 * The head of the log: writes, zeros and trims go, in arrival order, into the open log object (its data into the
 * object's cache slot, its extents into the map). An object is sealed when its data area is full, its extent table
 * grows too big, it has been open for --objstore-flushevery, or a remote FLUSH, a snapshot or close asks; sealing
 * takes its extent table from the map (what it changed, as its last writes left it) and opens the next sequence
 * number. A sealed object goes to the uploader once a commit made it durable locally (the committer's onDurable),
 * so the store never has an object the local catalog does not know.
 */
import { EXTENT_RECORD_BYTES } from "./codec/log-object.ts";
import type { Committer } from "./committer.ts";
import { PAGE_SPAN } from "./map-page.ts";
import { LogObject, OPEN, SEALED } from "./objects.ts";
import type { Volume } from "./volume.ts";

export class LogWriter {
  open: LogObject;
  /** Client data bytes written, for the write amplification. */
  writtenBytes = 0;
  /** Client bytes zeroed or trimmed. */
  zeroedBytes = 0;
  /** Bytes the GC copied into the log. */
  gcBytes = 0;
  /** Data bytes of objects not yet stored (the open one and sealed ones), kept as they change. */
  private pending = 0;

  constructor(
    private readonly v: Volume,
    private readonly committer: Committer,
    open: LogObject,
  ) {
    this.open = open;
    for (const o of v.objects.values()) if (o.state === OPEN || o.state === SEALED) this.pending += o.dataLength;
  }

  /** An object reached the store: its bytes no longer count as pending. */
  stored(o: LogObject): void {
    this.pending -= o.dataLength;
  }

  /** Whether the open object can take no more: data area full, or an extent table of a quarter of the object. */
  private full(o: LogObject): boolean {
    return o.dataLength >= this.v.objectSize || o.extentCount * EXTENT_RECORD_BYTES >= this.v.objectSize / 4;
  }

  /**
   * Appends `data` at volume `offset` (synchronous: the write is visible when this returns). A write that fits in an
   * object never straddles two: the open object is sealed first, so a replay that stops between objects never
   * applies half a write. A bigger write spans several, each but the last marked as continued.
   */
  write(offset: number, data: Uint8Array, gc = false): void {
    const { map, file } = this.v;
    if (data.length <= this.v.objectSize && data.length > this.v.objectSize - this.open.dataLength) this.seal();
    for (let done = 0; done < data.length; ) {
      if (this.full(this.open)) {
        if (done > 0) this.open.continued = true;
        this.seal();
      }
      const o = this.open;
      const n = Math.min(data.length - done, this.v.objectSize - o.dataLength);
      o.slot ??= file.takeSlot();
      if (o.dataLength === 0 && o.extentCount === 0) o.openedAt = Date.now();
      file.write(o.slot, o.dataLength, data.subarray(done, done + n));
      map.set(offset + done, n, o.seq, o.dataLength, false);
      this.touch(o, offset + done, n);
      o.dataLength += n;
      this.pending += n;
      o.rowDirty = true;
      done += n;
    }
    if (gc) this.gcBytes += data.length;
    else this.writtenBytes += data.length;
  }

  /** Makes a range read as zeros: recorded only where the volume has data (holes and zeros stay as they are). */
  zero(offset: number, length: number): void {
    const { map } = this.v;
    this.zeroedBytes += length;
    let recorded = false;
    for (const piece of map.lookup(offset, length)) {
      if (piece.kind !== "data") continue;
      if (this.full(this.open)) {
        if (recorded) this.open.continued = true;
        this.seal();
      }
      recorded = true;
      const o = this.open;
      if (o.dataLength === 0 && o.extentCount === 0) o.openedAt = Date.now();
      map.set(piece.offset, piece.length, o.seq, 0, true);
      this.touch(o, piece.offset, piece.length);
      o.rowDirty = true;
    }
  }

  private touch(o: LogObject, offset: number, length: number): void {
    const first = Math.floor(offset / PAGE_SPAN);
    const last = Math.floor((offset + length - 1) / PAGE_SPAN);
    for (let p = first; p <= last; p++) o.touched.add(p);
    o.extentCount += last - first + 1;
  }

  /** Whether the open object holds anything. */
  get openEmpty(): boolean {
    return this.open.dataLength === 0 && this.open.extentCount === 0;
  }

  /**
   * Seals the open object when it holds anything and opens the next one; returns the sealed object (undefined when
   * there was nothing to seal). It reaches the uploader once durable.
   */
  seal(): LogObject | undefined {
    const o = this.open;
    if (this.openEmpty) return undefined;
    o.extents = this.v.map.extentsOf(o.seq, o.touched);
    o.state = SEALED;
    o.touched.clear();
    o.rowDirty = true;
    this.open = new LogObject(o.seq + 1, this.v.epoch, OPEN);
    this.v.objects.add(this.open);
    // The commit's onDurable hands it to the uploader; after a failed commit, the next one that succeeds does.
    this.committer.commit(20).catch((e: unknown) => {
      this.v.log.log("error", "objstore: cannot commit a sealed log object to the local catalog", { seq: o.seq, error: e instanceof Error ? e.message : String(e) });
    });
    return o;
  }

  /** Seals the open object when it has been open longer than `ms`. */
  sealIfOlder(ms: number): void {
    if (!this.openEmpty && Date.now() - this.open.openedAt >= ms) this.seal();
  }

  /** Bytes held locally that the store does not have yet (the open object and sealed ones). */
  pendingBytes(): number {
    return this.pending;
  }
}
