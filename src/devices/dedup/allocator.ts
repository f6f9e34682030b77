/**
 * Slot allocation in the blocks file: chunks dedicated to one slot size, a free list per chunk, and whole chunks
 * returned to a shared pool (and their disk space released) once their last block is freed.
 *
 * The allocator only hands out slots that no committed state refers to: the device releases a slot either after
 * the commit that dropped its last reference, or at once when the block was never committed. That is what keeps a
 * crash from leaving a map entry that points at a reused slot.
 */
import { CHUNK_UNITS, UNITS_PER_BLOCK, chunkOf } from "./layout.ts";

/** Units a chunk of `units`-unit slots can hand out. */
function capacity(units: number): number {
  return Math.floor(CHUNK_UNITS / units) * units;
}

interface Chunk {
  readonly index: number;
  readonly units: number;
  /** Slots handed out and not released. */
  used: number;
  /** Slots never handed out start here (relative to the chunk). */
  next: number;
  /** Released slots (absolute), reused first. */
  readonly freed: number[];
}

export class SlotAllocator {
  private readonly chunks = new Map<number, Chunk>();
  /** Per slot size: chunks that have room, in the order they got it. */
  private readonly open: Map<number, Chunk>[] = Array.from({ length: UNITS_PER_BLOCK + 1 }, () => new Map());
  /** Chunks below `end` that hold nothing, reused before the file grows. */
  private emptyChunks: number[] = [];
  /** One past the highest chunk ever used: the blocks file's logical end is `end * CHUNK_UNITS` units. */
  private end = 0;
  /** Units in slots handed out. */
  usedUnits = 0;
  /** Units of all slots in chunks that are in use. */
  private capacityUnits = 0;

  /**
   * Rebuilds the state of a store from its committed blocks (slot, units), as read at open. Slots not listed are
   * free, including any written after the last commit.
   */
  static fromSlots(slots: Iterable<readonly [slot: number, units: number, ...rest: number[]]>): SlotAllocator {
    const allocator = new SlotAllocator();
    const taken = new Map<number, Set<number>>();
    for (const [slot, units] of slots) {
      const index = chunkOf(slot);
      let chunk = allocator.chunks.get(index);
      if (chunk === undefined) {
        chunk = { index, units, used: 0, next: capacity(units), freed: [] };
        allocator.chunks.set(index, chunk);
        allocator.capacityUnits += capacity(units);
        taken.set(index, new Set());
      }
      if (chunk.units !== units) throw new Error(`slot ${slot} (${units} units) lies in a chunk of ${chunk.units}-unit slots`);
      const set = taken.get(index)!;
      if (set.has(slot)) throw new Error(`slot ${slot} is used by two blocks`);
      set.add(slot);
      chunk.used++;
      allocator.usedUnits += units;
      allocator.end = Math.max(allocator.end, index + 1);
    }
    for (const chunk of allocator.chunks.values()) {
      const set = taken.get(chunk.index)!;
      const base = chunk.index * CHUNK_UNITS;
      // Highest first, so that pop() hands out the lowest free slot.
      for (let s = base + chunk.next - chunk.units; s >= base; s -= chunk.units) if (!set.has(s)) chunk.freed.push(s);
      if (chunk.freed.length > 0) allocator.open[chunk.units]!.set(chunk.index, chunk);
    }
    for (let i = allocator.end - 1; i >= 0; i--) if (!allocator.chunks.has(i)) allocator.emptyChunks.push(i);
    return allocator;
  }

  /** A free slot of `units` units. */
  allocate(units: number): number {
    const open = this.open[units]!;
    let chunk: Chunk | undefined = open.values().next().value;
    if (chunk === undefined) {
      const index = this.emptyChunks.pop() ?? this.end++;
      chunk = { index, units, used: 0, next: 0, freed: [] };
      this.chunks.set(index, chunk);
      this.capacityUnits += capacity(units);
      open.set(index, chunk);
    }
    let slot: number;
    if (chunk.freed.length > 0) {
      slot = chunk.freed.pop()!;
    } else {
      slot = chunk.index * CHUNK_UNITS + chunk.next;
      chunk.next += units;
    }
    chunk.used++;
    this.usedUnits += units;
    if (chunk.freed.length === 0 && chunk.next + units > CHUNK_UNITS) open.delete(chunk.index);
    return slot;
  }

  /**
   * Returns a slot. Returns the index of its chunk when that chunk became empty (its space may be released), else
   * undefined.
   */
  release(slot: number, units: number): number | undefined {
    const index = chunkOf(slot);
    const chunk = this.chunks.get(index);
    if (chunk === undefined || chunk.units !== units) throw new Error(`release of slot ${slot} (${units} units) that was never allocated`);
    chunk.used--;
    this.usedUnits -= units;
    if (chunk.used === 0) {
      this.chunks.delete(index);
      this.open[units]!.delete(index);
      this.emptyChunks.push(index);
      this.capacityUnits -= capacity(units);
      return index;
    }
    chunk.freed.push(slot);
    this.open[units]!.set(index, chunk);
    return undefined;
  }

  /** Units the blocks file spans (its used chunks and the empty ones between them). */
  get spanUnits(): number {
    return this.end * CHUNK_UNITS;
  }

  /** Slots free for reuse inside chunks that are in use, in units. */
  get freeUnitsInUse(): number {
    return this.capacityUnits - this.usedUnits;
  }
}
