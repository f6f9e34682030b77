/**
 * Decoded compressed blocks by slot, so reads of hot compressed blocks skip lz4. Evicts the least recently used:
 * a hit moves the block to the end of the Map's order, so a block read over and over survives a stream of blocks
 * read once (in load order it would go first, however often it is read).
 */
export class DecodedCache {
  private readonly blocks = new Map<number, Buffer>();
  /** Blocks decoded since opening (cache misses), for the stats. */
  loads = 0;

  constructor(private readonly blockSize: number) {}

  /** The decoded block in `slot`, decoding it with `decode` on a miss. */
  get(slot: number, decode: (into: Buffer) => void): Buffer {
    let block = this.blocks.get(slot);
    if (block !== undefined) {
      this.blocks.delete(slot);
      this.blocks.set(slot, block);
      return block;
    }
    block = Buffer.allocUnsafe(this.blockSize);
    decode(block);
    this.loads++;
    this.blocks.set(slot, block);
    return block;
  }

  /** The slot's content changed or it was freed. */
  delete(slot: number): void {
    this.blocks.delete(slot);
  }

  /** Drops the least recently used block; false when there is none. */
  evictOne(): boolean {
    const oldest = this.blocks.keys().next();
    if (oldest.done === true) return false;
    this.blocks.delete(oldest.value);
    return true;
  }

  get memory(): number {
    return this.blocks.size * (this.blockSize + 64);
  }

  clear(): void {
    this.blocks.clear();
  }
}
