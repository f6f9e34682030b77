/**
 * The volume map: which bytes of the volume live in which log object at which position, as pages of PAGE_SPAN
 * (map-page.ts). Pages are loaded from the catalog on first use and clean ones are dropped again beyond a memory
 * budget. Every change tells the live counts (per object: bytes some extent still points at), which the GC reads.
 *
 * A checkpoint needs the map exactly as it was after some object was sealed, while writes go on: `freeze()` marks
 * that moment, and from then on a page is copied before its first change, so `frozenPage` gives the page as it was
 * until `thaw()`.
 */
import { MapPage, PAGE_SHIFT, PAGE_SPAN, type LiveAdjust, type MapPiece } from "./map-page.ts";

/** Where pages come from and go to (the catalog). */
export interface PageSource {
  load(page: number): Uint8Array | undefined;
  /** Every page index the catalog holds, ascending. */
  indexes(): number[];
}

export class ExtentMap {
  private readonly pages = new Map<number, MapPage>();
  /** Page copies made since `freeze()`; `null`: the page did not exist when frozen. */
  private frozen: Map<number, MapPage | null> | undefined;
  private memory = 0;
  /** Counts page uses: eviction drops the least recently used clean pages first. */
  private clock = 0;
  /** Pages taken by commits still running (never evicted: the catalog may not have them yet). */
  private readonly committing = new Map<number, number>();

  constructor(
    readonly size: number,
    private readonly source: PageSource,
    private readonly live: LiveAdjust,
    private readonly memoryBudget = 256 << 20,
  ) {
    this.known = new Set(source.indexes());
  }

  /** Every page that exists in memory or in the catalog: a lookup of any other page is a hole without a query. */
  private readonly known: Set<number>;

  private page(index: number, create: boolean): MapPage | undefined {
    let page = this.pages.get(index);
    if (page !== undefined) {
      page.lastUse = ++this.clock;
      return page;
    }
    if (!create && !this.known.has(index)) return undefined;
    this.known.add(index);
    const bytes = this.source.load(index);
    if (bytes !== undefined) page = MapPage.unpack(bytes, `map page ${index}`);
    else if (create) page = new MapPage();
    else return undefined;
    page.lastUse = ++this.clock;
    this.pages.set(index, page);
    this.memory += page.memoryBytes;
    return page;
  }

  /** Makes [offset, offset+length) read as zeros written in object `seq`, or as data at `pos` of object `seq`. */
  set(offset: number, length: number, seq: number, pos: number, zero: boolean): void {
    let at = offset;
    const end = offset + length;
    while (at < end) {
      const index = Math.floor(at / PAGE_SPAN);
      const base = index * PAGE_SPAN;
      const stop = Math.min(end, base + PAGE_SPAN);
      const page = this.page(index, true)!;
      if (this.frozen !== undefined && !this.frozen.has(index)) this.frozen.set(index, page.count === 0 && !page.dirty ? null : page.clone());
      const before = page.memoryBytes;
      page.set(at - base, stop - base, seq, zero ? 0 : pos + (at - offset), zero, this.live);
      this.memory += page.memoryBytes - before;
      at = stop;
    }
    this.evict();
  }

  /** The runs covering [offset, offset+length), in order. */
  lookup(offset: number, length: number, out: MapPiece[] = []): MapPiece[] {
    let at = offset;
    const end = offset + length;
    while (at < end) {
      const index = Math.floor(at / PAGE_SPAN);
      const base = index * PAGE_SPAN;
      const stop = Math.min(end, base + PAGE_SPAN);
      const page = this.page(index, false);
      if (page === undefined) {
        const last = out[out.length - 1];
        if (last !== undefined && last.kind === "hole" && last.offset + last.length === at) last.length += stop - at;
        else out.push({ offset: at, length: stop - at, kind: "hole", seq: 0, pos: 0 });
      } else {
        page.pieces(base, at - base, stop - base, out);
      }
      at = stop;
    }
    return out;
  }

  /**
   * Pages changed since `takeDirty` last ran, as catalog rows (empty pages as empty bytes), marked clean; they stay
   * in memory until `settle` says whether the commit that took them succeeded.
   */
  takeDirty(): Array<{ page: number; bytes: Uint8Array }> {
    const out: Array<{ page: number; bytes: Uint8Array }> = [];
    for (const [index, page] of this.pages) {
      if (!page.dirty) continue;
      out.push({ page: index, bytes: page.pack() });
      page.dirty = false;
      this.committing.set(index, (this.committing.get(index) ?? 0) + 1);
    }
    return out;
  }

  /** After the commit of pages `indexes` from `takeDirty`: a failed one leaves them dirty again. */
  settle(indexes: readonly number[], ok: boolean): void {
    for (const index of indexes) {
      const n = (this.committing.get(index) ?? 1) - 1;
      if (n <= 0) this.committing.delete(index);
      else this.committing.set(index, n);
      if (!ok) {
        const page = this.pages.get(index);
        if (page !== undefined) page.dirty = true;
      }
    }
  }

  /** Whether any page holds changes the catalog lacks. */
  get hasDirty(): boolean {
    for (const page of this.pages.values()) if (page.dirty) return true;
    return false;
  }

  /** Starts a frozen view (see the file comment); only one at a time. */
  freeze(): void {
    if (this.frozen !== undefined) throw new Error("the map is already frozen");
    this.frozen = new Map();
  }

  thaw(): void {
    this.frozen = undefined;
  }

  /** Every page index that exists now or existed when frozen, ascending. */
  pageIndexes(): number[] {
    const all = new Set<number>(this.known);
    if (this.frozen !== undefined) for (const index of this.frozen.keys()) all.add(index);
    return [...all].sort((a, b) => a - b);
  }

  /** Page `index` as it was at `freeze()` (without loading it into the cache), or undefined when it was empty. */
  frozenPage(index: number): MapPage | undefined {
    if (this.frozen?.has(index)) return this.frozen.get(index) ?? undefined;
    return this.peek(index);
  }

  /** Page `index` as it is now, without keeping it in the cache when it was not there. */
  peek(index: number): MapPage | undefined {
    const cached = this.pages.get(index);
    if (cached !== undefined) return cached;
    if (!this.known.has(index)) return undefined;
    const bytes = this.source.load(index);
    return bytes === undefined ? undefined : MapPage.unpack(bytes, `map page ${index}`);
  }

  /** Changes positions of object `seq`'s extents on the pages `indexes` (its data area was rewritten). */
  remap(seq: number, indexes: Iterable<number>, translate: (pos: number, length: number) => number): void {
    for (const index of indexes) {
      const page = this.page(index, false);
      if (page === undefined) continue;
      if (this.frozen !== undefined && !this.frozen.has(index)) this.frozen.set(index, page.clone());
      page.remap(seq, translate);
    }
  }

  /** Extents of object `seq` on the pages `indexes`, in volume order (what the object changed, when it is sealed). */
  extentsOf(seq: number, indexes: Iterable<number>): Array<{ offset: number; length: number; pos: number; zero: boolean }> {
    const out: Array<{ offset: number; length: number; pos: number; zero: boolean }> = [];
    for (const index of [...indexes].sort((a, b) => a - b)) {
      const page = this.page(index, false);
      const base = index * PAGE_SPAN;
      page?.forEach((s, e, q, p, z) => {
        if (q !== seq) return;
        const last = out[out.length - 1];
        // Runs split only by the page boundary join again.
        if (last !== undefined && last.offset + last.length === base + s && last.zero === z && (z || last.pos + last.length === p)) last.length += e - s;
        else out.push({ offset: base + s, length: e - s, pos: z ? 0 : p, zero: z });
      });
    }
    return out;
  }

  /** Drops clean, least recently used pages while the cache holds more than its budget. */
  private evict(): void {
    if (this.memory <= this.memoryBudget) return;
    const clean = [...this.pages].filter(([index, page]) => !page.dirty && !this.committing.has(index)).sort((a, b) => a[1].lastUse - b[1].lastUse);
    for (const [index, page] of clean) {
      if (this.memory <= this.memoryBudget * 0.9) break;
      this.pages.delete(index);
      this.memory -= page.memoryBytes;
    }
  }

  /** Bytes of memory the cached pages hold. */
  get memoryBytes(): number {
    return this.memory;
  }

  /** Extents in the cached pages (for the stats). */
  get cachedExtents(): number {
    let n = 0;
    for (const page of this.pages.values()) n += page.count;
    return n;
  }
}

export { PAGE_SHIFT, PAGE_SPAN };
export type { MapPiece };
