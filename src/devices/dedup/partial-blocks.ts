/**
 * Blocks being rewritten piecewise (writes smaller than a block), held in memory until they are worth storing.
 * Storing a block costs a SHA-256, an index lookup and a map change; paying that for every 512 B or 1 KiB piece made
 * nbd-tester-client's 1 KiB writes run at 4.5 MiB/s. Here a piece only lands in the block's buffer, and the block
 * is stored once: when every sector of it has been written since it was taken in, when it is the least recently
 * written of more than `limit` such blocks, or when the device commits (FLUSH, FUA, close, the cache bound), which
 * stores all of them first. So a commit covers every write acknowledged before it, as without coalescing; only
 * writes not yet committed, which a crash may lose anyway, wait in memory.
 *
 * A block's buffer always holds its whole current content (taken from the store when the first piece arrives), so
 * reads are served from it directly.
 */

/** Sectors (the unit of completeness): a piece covers a sector only when it writes all of it. */
const SECTOR = 512;
/** Adjacent blocks stored together at a commit, in one run (few pwrites). */
const MAX_GROUP = 256;

interface Partial {
  readonly content: Buffer;
  /** 1 for each sector written since the block was taken in. */
  readonly written: Uint8Array;
  count: number;
}

export interface PartialParts {
  readonly blockSize: number;
  /** The most blocks held at once. */
  readonly limit: number;
  /** The block's stored content into `into` (zeros for an unwritten block). */
  readonly load: (block: number, into: Buffer) => void;
  /** Stores whole blocks `first`, `first + 1`, ... with `data`; throws before changing anything. */
  readonly store: (first: number, data: Uint8Array) => void;
}

export class PartialBlocks {
  /** In order of last write: the first is the next to go when the limit is reached. */
  private readonly blocks = new Map<number, Partial>();
  private readonly sectors: number;
  private readonly spare: Buffer[] = [];
  private staging = Buffer.alloc(0);
  /** Blocks stored because they were complete, for the stats and the tests. */
  completed = 0;

  constructor(private readonly parts: PartialParts) {
    this.sectors = Math.max(1, parts.blockSize / SECTOR);
  }

  get size(): number {
    return this.blocks.size;
  }

  get memory(): number {
    return (this.blocks.size + this.spare.length) * (this.parts.blockSize + 96);
  }

  /** The held content of `block`, if it is being coalesced. */
  content(block: number): Buffer | undefined {
    return this.blocks.size === 0 ? undefined : this.blocks.get(block)?.content;
  }

  /** Puts `piece` at byte `from` of `block` (piece and offset inside the block). */
  write(block: number, from: number, piece: Uint8Array): void {
    let held = this.blocks.get(block);
    if (held === undefined) {
      if (this.blocks.size >= this.parts.limit) this.storeOldest();
      held = this.takeIn(block);
    } else {
      this.blocks.delete(block);
      this.blocks.set(block, held);
    }
    held.content.set(piece, from);
    const end = from + piece.length;
    for (let s = Math.ceil(from / SECTOR); (s + 1) * SECTOR <= end; s++) {
      if (held.written[s] === 0) {
        held.written[s] = 1;
        held.count++;
      }
    }
    if (held.count === this.sectors) {
      this.parts.store(block, held.content);
      this.release(block, held);
      this.completed++;
    }
  }

  /** Blocks `first`..`first + count - 1` are being replaced whole: what is held for them is dropped. */
  drop(first: number, count: number): void {
    if (this.blocks.size === 0) return;
    if (count > this.blocks.size) {
      for (const [block, held] of this.blocks) if (block >= first && block < first + count) this.release(block, held);
      return;
    }
    for (let block = first; block < first + count; block++) {
      const held = this.blocks.get(block);
      if (held !== undefined) this.release(block, held);
    }
  }

  /** Stores every held block, adjacent ones as one run. Throws on the first failure, keeping what was not stored. */
  storeAll(): void {
    if (this.blocks.size === 0) return;
    const order = [...this.blocks.keys()].sort((a, b) => a - b);
    const bs = this.parts.blockSize;
    for (let i = 0; i < order.length; ) {
      let j = i + 1;
      while (j < order.length && j - i < MAX_GROUP && order[j] === order[j - 1]! + 1) j++;
      if (j - i === 1) {
        this.parts.store(order[i]!, this.blocks.get(order[i]!)!.content);
      } else {
        if (this.staging.length < (j - i) * bs) this.staging = Buffer.alloc(MAX_GROUP * bs);
        for (let k = i; k < j; k++) this.staging.set(this.blocks.get(order[k]!)!.content, (k - i) * bs);
        this.parts.store(order[i]!, this.staging.subarray(0, (j - i) * bs));
      }
      for (let k = i; k < j; k++) this.release(order[k]!, this.blocks.get(order[k]!)!);
      i = j;
    }
    // The staging buffer is only for commits; do not keep up to a megabyte for the next one.
    this.staging = Buffer.alloc(0);
  }

  /** Forgets everything held (at close, after the final commit). */
  clear(): void {
    this.blocks.clear();
    this.spare.length = 0;
  }

  private takeIn(block: number): Partial {
    const content = this.spare.pop() ?? Buffer.allocUnsafe(this.parts.blockSize);
    this.parts.load(block, content);
    const held: Partial = { content, written: new Uint8Array(this.sectors), count: 0 };
    this.blocks.set(block, held);
    return held;
  }

  private storeOldest(): void {
    const [block, held] = this.blocks.entries().next().value as [number, Partial];
    this.parts.store(block, held.content);
    this.release(block, held);
  }

  private release(block: number, held: Partial): void {
    this.blocks.delete(block);
    if (this.spare.length < 16) this.spare.push(held.content);
  }
}
