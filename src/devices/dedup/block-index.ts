/**
 * The block index in memory: every stored block's slot, refcount and hash, cached from sqlite, with the totals the
 * stats show. Changes stay in memory until commit; the rule that makes crashes safe lives here: a block whose last
 * reference goes away keeps its slot until the commit that records it, unless it was never committed.
 */
import type { BlockRow, Catalog } from "./catalog.ts";
import { DeviceError } from "../device.ts";
import { HashFilter } from "./hash-filter.ts";

export interface Entry {
  readonly slot: number;
  readonly units: number;
  refs: number;
  readonly hash: Uint8Array;
  readonly key: string;
  /** A row for this block exists in the committed database. */
  committed: boolean;
}

/** Memory one cached entry costs (two map slots, the hash and its key string), for the cache bound. */
export const ENTRY_COST = 240;

/** The Map key of a hash (its bytes as a latin1 string). */
export function keyOf(hash: Uint8Array): string {
  return Buffer.from(hash.buffer, hash.byteOffset, hash.byteLength).toString("latin1");
}

export class BlockIndex {
  private readonly bySlot = new Map<number, Entry>();
  private readonly byHash = new Map<string, Entry>();
  private readonly dirty = new Set<Entry>();
  /** Committed blocks whose refcount fell to zero: their slots are freed by the next commit. */
  private readonly pendingFree = new Set<Entry>();
  /** Sum of refcounts: logical blocks that hold data. */
  logicalBlocks = 0;
  /** Blocks with at least one reference. */
  uniqueBlocks = 0;
  /** Units those blocks take in the blocks file. */
  liveUnits = 0;
  /** Says which hashes certainly have no row, so new content skips the database lookup. */
  private filter: HashFilter;

  constructor(
    private readonly catalog: Catalog,
    /** Called with a slot nobody can refer to any more (after commit, or never committed). */
    private readonly freeSlot: (slot: number, units: number) => void,
  ) {
    for (const [, units, refs] of catalog.slots()) {
      this.logicalBlocks += refs;
      this.uniqueBlocks++;
      this.liveUnits += units;
    }
    this.filter = HashFilter.of(this.uniqueBlocks, catalog.hashes());
  }

  /** The block with this content hash, if one is stored (refcount zero included: it can be revived until commit). */
  withHash(hash: Uint8Array, key = keyOf(hash)): Entry | undefined {
    const cached = this.byHash.get(key);
    if (cached !== undefined) return cached;
    // Blocks not yet committed are always cached, so the filter only has to cover rows.
    if (!this.filter.mayContain(hash)) return undefined;
    const row = this.catalog.blockWithHash(hash);
    return row === undefined ? undefined : this.cache(row, key);
  }

  /** The block in `slot`; a map entry that points at no block is an inconsistent store. */
  atSlot(slot: number, units: number): Entry {
    let entry = this.bySlot.get(slot);
    if (entry === undefined) {
      const row = this.catalog.block(slot);
      if (row !== undefined) entry = this.cache(row, keyOf(row.hash));
    }
    if (entry === undefined || entry.units !== units) {
      throw new DeviceError("EIO", `dedup device: the map refers to slot ${slot} (${units} units), which holds no such block; run usbd-tui check`);
    }
    return entry;
  }

  private cache(row: BlockRow, key: string): Entry {
    const entry: Entry = { slot: row.slot, units: row.units, refs: row.refs, hash: row.hash, key, committed: true };
    this.bySlot.set(entry.slot, entry);
    this.byHash.set(key, entry);
    return entry;
  }

  /** Records a block just written to `slot`, with no references yet. */
  add(slot: number, units: number, hash: Uint8Array, key = keyOf(hash)): Entry {
    // A copy, not a view: the caller reuses its hash buffer (and Buffer#slice would share memory).
    const entry: Entry = { slot, units, refs: 0, hash: new Uint8Array(hash), key, committed: false };
    this.bySlot.set(slot, entry);
    this.byHash.set(entry.key, entry);
    return entry;
  }

  ref(entry: Entry): void {
    if (entry.refs === 0) {
      this.pendingFree.delete(entry);
      this.uniqueBlocks++;
      this.liveUnits += entry.units;
    }
    entry.refs++;
    this.logicalBlocks++;
    this.dirty.add(entry);
  }

  unref(entry: Entry): void {
    entry.refs--;
    this.logicalBlocks--;
    this.dirty.add(entry);
    if (entry.refs > 0) return;
    this.uniqueBlocks--;
    this.liveUnits -= entry.units;
    if (entry.committed) {
      this.pendingFree.add(entry);
    } else {
      // No committed state knows this block: its slot can be reused at once.
      this.forget(entry);
      this.freeSlot(entry.slot, entry.units);
    }
  }

  private forget(entry: Entry): void {
    this.bySlot.delete(entry.slot);
    this.byHash.delete(entry.key);
    this.dirty.delete(entry);
  }

  get dirtyCount(): number {
    return this.dirty.size;
  }

  /** Blocks that lost their last reference and free their slot at the next commit. */
  get reclaimable(): number {
    return this.pendingFree.size;
  }

  /** Memory of the cached entries (the bound applies to these). */
  get memory(): number {
    return this.bySlot.size * ENTRY_COST;
  }

  /** Memory of the hash filter: 2.5 to 5 bytes per stored block, outside the cache bound. */
  get filterMemory(): number {
    return this.filter.memory;
  }

  /** Writes the changed rows; call inside the commit transaction. */
  save(): void {
    for (const entry of this.dirty) {
      if (entry.refs === 0) this.catalog.removeBlock(entry.slot);
      else if (entry.committed) this.catalog.setRefs(entry.slot, entry.refs);
      else this.catalog.addBlock(entry);
    }
  }

  /** After a commit that made the filter overfull: rebuild it from the rows, dropping freed blocks' hashes. */
  private refreshFilter(): void {
    if (this.filter.full) this.filter = HashFilter.of(this.uniqueBlocks, this.catalog.hashes());
  }

  /** After the transaction committed: rows are clean, and blocks nobody refers to give their slots back. */
  committed(): void {
    for (const entry of this.dirty) {
      if (!entry.committed && entry.refs > 0) this.filter.add(entry.hash);
      entry.committed = entry.refs > 0;
    }
    this.dirty.clear();
    for (const entry of this.pendingFree) {
      this.forget(entry);
      this.freeSlot(entry.slot, entry.units);
    }
    this.pendingFree.clear();
    this.refreshFilter();
  }

  /** Drops clean entries, oldest first, until at most `bytes` of entries stay cached. */
  shrink(bytes: number): void {
    for (const entry of this.bySlot.values()) {
      if (this.memory <= bytes) return;
      if (!this.dirty.has(entry) && entry.refs > 0) this.forget(entry);
    }
  }

  clear(): void {
    this.bySlot.clear();
    this.byHash.clear();
    this.dirty.clear();
    this.pendingFree.clear();
  }
}
