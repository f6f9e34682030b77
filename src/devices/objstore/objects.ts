/**
 * One log object as the volume sees it: open (receiving writes into its cache slot), sealed (complete, waiting for
 * its upload) or stored (in the object store, immutable; its slot, if any, caches some of its chunks).
 */
import { packLayout, unpackLayout } from "./codec/checkpoint.ts";
import type { LogExtent, ObjectLayout } from "./codec/log-object.ts";
import type { ObjectRow } from "./catalog.ts";

export const OPEN = 0;
export const SEALED = 1;
export const STORED = 2;
export type ObjectState = typeof OPEN | typeof SEALED | typeof STORED;

export class LogObject {
  state: ObjectState;
  slot: number | undefined;
  /** Bytes appended to the data area so far (final once sealed). */
  dataLength = 0;
  /** Extents recorded while open (to size the header; the true table comes from the map at seal). */
  extentCount = 0;
  /** Bytes of the data area the map points at. */
  live = 0;
  /** Stored: where its chunks are. */
  layout: ObjectLayout | undefined;
  /** Sealed: the extent table the upload sends. */
  extents: LogExtent[] | undefined;
  /** Open: the map pages it wrote to. */
  readonly touched = new Set<number>();
  /** Stored with a slot: which chunks the slot holds. Undefined for open and sealed objects (they hold all). */
  present: Uint8Array | undefined;
  /** Requests reading its slot after a fetch; a pinned object's chunks are not evicted. */
  pins = 0;
  /** Its row differs from the catalog's. */
  rowDirty = true;
  /** Set while it is being uploaded. */
  upload: Promise<void> | undefined;
  /** The state and slot the catalog has for it durably (what a crash would come back to). */
  durableState: ObjectState | undefined;
  durableSlot: number | undefined;
  /** When its first byte was written (open objects are sealed by age too). */
  openedAt = 0;
  /** Its last write continues in the next object (a write larger than an object). */
  continued = false;

  constructor(
    readonly seq: number,
    /** The writer epoch it is (to be) stored under; an object not yet uploaded takes the epoch of the writer. */
    public epoch: number,
    state: ObjectState,
  ) {
    this.state = state;
  }

  get chunkCount(): number {
    return this.layout?.chunks.length ?? 0;
  }

  /** Whether chunk `i` of a stored object is in its slot. */
  hasChunk(i: number): boolean {
    if (this.state !== STORED) return this.slot !== undefined;
    return this.slot !== undefined && this.present !== undefined && (this.present[i >> 3]! & (1 << (i & 7))) !== 0;
  }

  markChunk(i: number, present: boolean): void {
    if (this.present === undefined) this.present = new Uint8Array(Math.ceil(this.chunkCount / 8));
    if (present) this.present[i >> 3]! |= 1 << (i & 7);
    else this.present[i >> 3]! &= ~(1 << (i & 7));
    this.rowDirty = true;
  }

  /** Chunks of a stored object held in its slot. */
  presentCount(): number {
    if (this.present === undefined) return 0;
    let n = 0;
    for (let i = 0; i < this.chunkCount; i++) if (this.hasChunk(i)) n++;
    return n;
  }

  row(): ObjectRow {
    const touched = new Uint8Array(this.touched.size * 4);
    const view = new DataView(touched.buffer);
    let at = 0;
    for (const page of this.touched) {
      view.setUint32(at, page, true);
      at += 4;
    }
    return {
      seq: this.seq,
      epoch: this.epoch,
      state: this.state,
      slot: this.slot ?? null,
      dataLength: this.dataLength,
      live: this.live,
      layout: this.layout === undefined ? null : packLayout(this.layout),
      extents: this.extents === undefined ? null : packExtents(this.extents),
      touched: this.state === OPEN ? touched : null,
      present: this.state === STORED && this.present !== undefined ? this.present : null,
      flags: this.continued ? 1 : 0,
    };
  }

  static fromRow(row: ObjectRow): LogObject {
    if (row.state !== OPEN && row.state !== SEALED && row.state !== STORED) throw new Error(`object ${row.seq}: unknown state ${row.state}`);
    const o = new LogObject(row.seq, row.epoch, row.state);
    o.slot = row.slot ?? undefined;
    o.dataLength = row.dataLength;
    o.live = row.live;
    if (row.layout !== null) o.layout = unpackLayout(row.layout, row.seq, row.epoch, row.dataLength);
    if (row.extents !== null) o.extents = unpackExtents(row.extents);
    if (row.touched !== null) {
      const view = new DataView(row.touched.buffer, row.touched.byteOffset, row.touched.length);
      for (let at = 0; at + 4 <= row.touched.length; at += 4) o.touched.add(view.getUint32(at, true));
    }
    if (row.present !== null) o.present = new Uint8Array(row.present);
    o.rowDirty = false;
    o.continued = (row.flags & 1) !== 0;
    o.durableState = o.state;
    o.durableSlot = o.slot;
    return o;
  }
}

function packExtents(extents: readonly LogExtent[]): Uint8Array {
  const out = new Uint8Array(extents.length * 17);
  const view = new DataView(out.buffer);
  extents.forEach((e, i) => {
    view.setFloat64(i * 17, e.offset, true);
    view.setUint32(i * 17 + 8, e.length, true);
    view.setUint32(i * 17 + 12, e.pos, true);
    view.setUint8(i * 17 + 16, e.zero ? 1 : 0);
  });
  return out;
}

function unpackExtents(bytes: Uint8Array): LogExtent[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const out: LogExtent[] = [];
  for (let at = 0; at + 17 <= bytes.length; at += 17) {
    out.push({ offset: view.getFloat64(at, true), length: view.getUint32(at + 8, true), pos: view.getUint32(at + 12, true), zero: view.getUint8(at + 16) === 1 });
  }
  return out;
}

/**
 * Every log object the volume knows, by sequence number, with the live counts the map keeps up to date and the
 * totals the stats show.
 */
export class ObjectTable {
  private readonly objects = new Map<number, LogObject>();

  get(seq: number): LogObject | undefined {
    return this.objects.get(seq);
  }

  add(o: LogObject): void {
    this.objects.set(o.seq, o);
  }

  delete(seq: number): void {
    this.objects.delete(seq);
  }

  values(): IterableIterator<LogObject> {
    return this.objects.values();
  }

  get size(): number {
    return this.objects.size;
  }

  /** The map's live-count callback: bytes of object `seq` gained or lost a reference. */
  readonly adjust = (seq: number, delta: number): void => {
    const o = this.objects.get(seq);
    if (o === undefined) return;
    o.live += delta;
    o.rowDirty = true;
  };

  /** Objects in sequence order. */
  sorted(): LogObject[] {
    return [...this.objects.values()].sort((a, b) => a.seq - b.seq);
  }
}
