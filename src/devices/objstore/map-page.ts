/**
 * One page of the volume map: the extents inside one PAGE_SPAN of the volume, sorted and never overlapping, in
 * parallel typed arrays (an extent costs 21 bytes, not a JavaScript object). An extent says where its bytes are:
 * at `pos` in the data area of log object `seq`, or zeros written in object `seq` (a trim or a zero write). Bytes no
 * extent covers were never written and read as zeros.
 */

export const PAGE_SHIFT = 20;
export const PAGE_SPAN = 1 << PAGE_SHIFT;

/** Told when bytes of an object become live (a new data extent) or dead (overwritten): the GC's live counts. */
export type LiveAdjust = (seq: number, delta: number) => void;

/** One run of a lookup: a hole (never written), zeros, or data at `pos` in object `seq`. */
export interface MapPiece {
  /** Volume offset of the run. */
  offset: number;
  length: number;
  kind: "hole" | "zero" | "data";
  seq: number;
  pos: number;
}

const ENTRY_BYTES = 21;

/** An extent while a change is assembled: start, end, seq, pos, zero (1) or data (0). */
type Run = [number, number, number, number, number];

export class MapPage {
  count = 0;
  /** The in-memory page differs from the catalog's copy. */
  dirty = false;
  /** When it was last used (the map's clock), for eviction. */
  lastUse = 0;
  private starts: Uint32Array;
  private ends: Uint32Array;
  private seqs: Float64Array;
  private poss: Uint32Array;
  private zeros: Uint8Array;

  constructor(capacity = 4) {
    this.starts = new Uint32Array(capacity);
    this.ends = new Uint32Array(capacity);
    this.seqs = new Float64Array(capacity);
    this.poss = new Uint32Array(capacity);
    this.zeros = new Uint8Array(capacity);
  }

  /** Index of the first entry whose end is after `offset`. */
  private find(offset: number): number {
    let lo = 0;
    let hi = this.count;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.ends[mid]! <= offset) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Makes [start, end) read as `zero` or as data at `pos` of object `seq`; `live` hears of every byte that changes owner. */
  set(start: number, end: number, seq: number, pos: number, zero: boolean, live: LiveAdjust): void {
    if (end <= start) return;
    const first = this.find(start);
    let last = first;
    while (last < this.count && this.starts[last]! < end) last++;
    // Entries first..last-1 overlap [start, end): at most their outer remainders survive.
    for (let i = first; i < last; i++) {
      if (this.zeros[i] === 0) live(this.seqs[i]!, -(Math.min(this.ends[i]!, end) - Math.max(this.starts[i]!, start)));
    }
    if (!zero) live(seq, end - start);
    const runs: Run[] = [];
    // The neighbours just outside are taken in too, so that a run that continues them merges with them.
    let from = first;
    let to = last;
    if (from > 0 && this.ends[from - 1] === start) runs.push(this.run(--from));
    if (first < last && this.starts[first]! < start) runs.push([this.starts[first]!, start, this.seqs[first]!, this.poss[first]!, this.zeros[first]!]);
    runs.push([start, end, seq, zero ? 0 : pos, zero ? 1 : 0]);
    if (first < last && this.ends[last - 1]! > end) {
      const i = last - 1;
      runs.push([end, this.ends[i]!, this.seqs[i]!, this.zeros[i] === 1 ? 0 : this.poss[i]! + (end - this.starts[i]!), this.zeros[i]!]);
    } else if (to < this.count && this.starts[to] === end) {
      runs.push(this.run(to++));
    }
    const merged: Run[] = [];
    for (const r of runs) {
      const prev = merged[merged.length - 1];
      if (prev !== undefined && prev[1] === r[0] && prev[2] === r[2] && prev[4] === r[4] && (r[4] === 1 || prev[3] + (prev[1] - prev[0]) === r[3])) prev[1] = r[1];
      else merged.push([...r]);
    }
    this.splice(from, to - from, merged);
    this.dirty = true;
  }

  private run(i: number): Run {
    return [this.starts[i]!, this.ends[i]!, this.seqs[i]!, this.poss[i]!, this.zeros[i]!];
  }

  private splice(at: number, remove: number, insert: readonly Run[]): void {
    const delta = insert.length - remove;
    const count = this.count + delta;
    if (count > this.starts.length) this.grow(Math.max(count, this.starts.length * 2));
    if (delta !== 0) {
      const tail = at + remove;
      for (const a of [this.starts, this.ends, this.poss] as const) a.copyWithin(at + insert.length, tail, this.count);
      this.seqs.copyWithin(at + insert.length, tail, this.count);
      this.zeros.copyWithin(at + insert.length, tail, this.count);
    }
    for (let k = 0; k < insert.length; k++) {
      const [s, e, q, p, z] = insert[k]!;
      this.starts[at + k] = s;
      this.ends[at + k] = e;
      this.seqs[at + k] = q;
      this.poss[at + k] = p;
      this.zeros[at + k] = z;
    }
    this.count = count;
  }

  private grow(capacity: number): void {
    const move = <T extends Uint32Array | Float64Array | Uint8Array>(a: T, make: (n: number) => T): T => {
      const b = make(capacity);
      b.set(a.subarray(0, this.count) as never);
      return b;
    };
    this.starts = move(this.starts, (n) => new Uint32Array(n));
    this.ends = move(this.ends, (n) => new Uint32Array(n));
    this.seqs = move(this.seqs, (n) => new Float64Array(n));
    this.poss = move(this.poss, (n) => new Uint32Array(n));
    this.zeros = move(this.zeros, (n) => new Uint8Array(n));
  }

  /** Appends the runs covering [start, end) of this page (whose first byte is volume offset `base`) to `out`. */
  pieces(base: number, start: number, end: number, out: MapPiece[]): void {
    let at = start;
    for (let i = this.find(start); i < this.count && at < end; i++) {
      const s = this.starts[i]!;
      if (s >= end) break;
      if (s > at) {
        out.push({ offset: base + at, length: s - at, kind: "hole", seq: 0, pos: 0 });
        at = s;
      }
      const e = Math.min(this.ends[i]!, end);
      const zero = this.zeros[i] === 1;
      out.push({ offset: base + at, length: e - at, kind: zero ? "zero" : "data", seq: this.seqs[i]!, pos: zero ? 0 : this.poss[i]! + (at - s) });
      at = e;
    }
    if (at < end) out.push({ offset: base + at, length: end - at, kind: "hole", seq: 0, pos: 0 });
  }

  /** Calls `visit` for every extent (start and end inside the page). */
  forEach(visit: (start: number, end: number, seq: number, pos: number, zero: boolean) => void): void {
    for (let i = 0; i < this.count; i++) visit(this.starts[i]!, this.ends[i]!, this.seqs[i]!, this.poss[i]!, this.zeros[i] === 1);
  }

  /** Changes the position of extents of object `seq` through `translate` (after the object's data area was rewritten). */
  remap(seq: number, translate: (pos: number, length: number) => number): void {
    for (let i = 0; i < this.count; i++) {
      if (this.seqs[i] === seq && this.zeros[i] === 0) {
        this.poss[i] = translate(this.poss[i]!, this.ends[i]! - this.starts[i]!);
        this.dirty = true;
      }
    }
  }

  clone(): MapPage {
    const copy = new MapPage(Math.max(4, this.count));
    copy.count = this.count;
    copy.starts.set(this.starts.subarray(0, this.count));
    copy.ends.set(this.ends.subarray(0, this.count));
    copy.seqs.set(this.seqs.subarray(0, this.count));
    copy.poss.set(this.poss.subarray(0, this.count));
    copy.zeros.set(this.zeros.subarray(0, this.count));
    return copy;
  }

  /** The page's extents as bytes (little-endian: start u32, end u32, seq f64, pos u32, zero u8). */
  pack(): Uint8Array {
    const out = new Uint8Array(this.count * ENTRY_BYTES);
    const view = new DataView(out.buffer);
    for (let i = 0, at = 0; i < this.count; i++, at += ENTRY_BYTES) {
      view.setUint32(at, this.starts[i]!, true);
      view.setUint32(at + 4, this.ends[i]!, true);
      view.setFloat64(at + 8, this.seqs[i]!, true);
      view.setUint32(at + 16, this.poss[i]!, true);
      view.setUint8(at + 20, this.zeros[i]!);
    }
    return out;
  }

  /** A page from `pack`'s bytes; throws on bytes that are not a well-formed page. */
  static unpack(bytes: Uint8Array, what: string): MapPage {
    if (bytes.length % ENTRY_BYTES !== 0) throw new Error(`${what}: map page of ${bytes.length} bytes is not whole entries`);
    const n = bytes.length / ENTRY_BYTES;
    const page = new MapPage(Math.max(4, n));
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
    let previousEnd = 0;
    for (let i = 0, at = 0; i < n; i++, at += ENTRY_BYTES) {
      const s = view.getUint32(at, true);
      const e = view.getUint32(at + 4, true);
      const seq = view.getFloat64(at + 8, true);
      const zero = view.getUint8(at + 20);
      if (s < previousEnd || e <= s || e > PAGE_SPAN || !Number.isSafeInteger(seq) || seq < 0 || zero > 1) {
        throw new Error(`${what}: map page entry ${i} is malformed`);
      }
      previousEnd = e;
      page.starts[i] = s;
      page.ends[i] = e;
      page.seqs[i] = seq;
      page.poss[i] = view.getUint32(at + 16, true);
      page.zeros[i] = zero;
    }
    page.count = n;
    return page;
  }

  /** Bytes of memory the page's arrays hold. */
  get memoryBytes(): number {
    return this.starts.length * ENTRY_BYTES + 64;
  }
}
