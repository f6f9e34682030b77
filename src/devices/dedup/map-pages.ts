/**
 * The logical map (block number -> map entry) as cached pages of sqlite rows. Every I/O reads it, so lookups are
 * a Map hit on a page in memory; changed pages are written back at commit, in the same transaction as the block
 * index, so the map and the refcounts can never disagree after a crash.
 *
 * The cache evicts the least recently used clean page: `cached` is kept in use order (a page moves to the end when
 * a lookup switches to it), so a page every request touches survives any stream of pages touched once.
 */
import type { Catalog } from "./catalog.ts";
import { MAP_PAGE_ENTRIES } from "./layout.ts";

interface Page {
  readonly entries: Float64Array;
}

/** Read-only stand-in for pages that have no row: every entry zero. */
const EMPTY_PAGE: Page = { entries: new Float64Array(MAP_PAGE_ENTRIES) };

/** Memory one cached page costs, for the cache bound. */
export const PAGE_COST = MAP_PAGE_ENTRIES * 8 + 160;

export class MapPages {
  private readonly cached = new Map<number, Page>();
  private readonly dirty = new Set<number>();
  /** Pages that have a row in sqlite; the others are all zeros and are not read from the database. */
  private readonly stored: Set<number>;
  /** The page the last lookup used: lookups within it skip the move to the end of `cached`. */
  private recent = -1;
  /** Pages read from the database since opening (cache misses), for the stats. */
  loads = 0;

  constructor(private readonly catalog: Catalog) {
    this.stored = new Set(catalog.pageIndexes());
  }

  get(block: number): number {
    const index = Math.floor(block / MAP_PAGE_ENTRIES);
    const page = this.use(index) ?? this.load(index, false);
    return page.entries[block - index * MAP_PAGE_ENTRIES]!;
  }

  set(block: number, entry: number): void {
    const index = Math.floor(block / MAP_PAGE_ENTRIES);
    const page = this.use(index) ?? this.load(index, true);
    page.entries[block - index * MAP_PAGE_ENTRIES] = entry;
    this.dirty.add(index);
  }

  /** The cached page, moved to the most recently used end. */
  private use(index: number): Page | undefined {
    const page = this.cached.get(index);
    if (page !== undefined && index !== this.recent) {
      this.cached.delete(index);
      this.cached.set(index, page);
      this.recent = index;
    }
    return page;
  }

  private load(index: number, forWrite: boolean): Page {
    if (!this.stored.has(index)) {
      if (!forWrite) return EMPTY_PAGE;
      const page = { entries: new Float64Array(MAP_PAGE_ENTRIES) };
      this.cached.set(index, page);
      this.recent = index;
      return page;
    }
    const entries = this.catalog.page(index);
    if (entries === undefined) throw new Error(`map page ${index} vanished from the database`);
    this.loads++;
    const page = { entries };
    this.cached.set(index, page);
    this.recent = index;
    return page;
  }

  get dirtyCount(): number {
    return this.dirty.size;
  }

  get memory(): number {
    return this.cached.size * PAGE_COST;
  }

  /** Writes the changed pages; call inside the commit transaction. */
  save(): void {
    for (const index of this.dirty) {
      const entries = this.cached.get(index)!.entries;
      this.catalog.savePage(index, entries);
    }
  }

  /** After the transaction committed: the saved pages are clean and the set of stored pages follows. */
  committed(): void {
    for (const index of this.dirty) {
      const empty = this.cached.get(index)!.entries.every((e) => e === 0);
      if (empty) this.stored.delete(index);
      else this.stored.add(index);
    }
    this.dirty.clear();
  }

  /** Drops clean pages, least recently used first, until at most `bytes` of pages stay cached. */
  shrink(bytes: number): void {
    for (const index of this.cached.keys()) {
      if (this.memory <= bytes) return;
      if (!this.dirty.has(index)) this.cached.delete(index);
    }
  }

  /** Forgets everything cached (at close). */
  clear(): void {
    this.cached.clear();
    this.dirty.clear();
  }
}
