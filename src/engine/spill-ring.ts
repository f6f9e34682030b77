/**
 * Reply bytes the socket has not taken yet, kept in a queue of fixed-size blocks reused from a small pool: replies
 * that meet backpressure are copied here instead of into fresh allocations (so a steady stream of large reads does
 * not page-fault new memory for every reply), and what the queue holds is never more than the bytes waiting plus
 * one partly filled block, so the memory budget's count of waiting bytes is the memory really used. A connection
 * that never meets backpressure holds no block. Emptied blocks go back to one pool for the whole process, so the
 * steady backlog of a deep queue of large reads (nbdcopy: 64 requests of 256 KiB per connection) is served from
 * reused memory instead of fresh pages, while N idle connections still pin nothing.
 */

const BLOCK_SIZE = 256 * 1024;
/** Emptied blocks the process keeps for reuse: 128 blocks, 32 MiB at most, whatever the number of connections. */
export const SPARE_POOL_BYTES = 32 * 1024 * 1024;
const SPARE_POOL_BLOCKS = SPARE_POOL_BYTES / BLOCK_SIZE;
const sparePool: Buffer[] = [];

export class SpillRing {
  /** Blocks in order; bytes [head, end) of the first and [0, tail) of the last are waiting (all of the others). */
  private readonly blocks: Buffer[] = [];
  private head = 0;
  private tail = 0;
  size = 0;

  push(bytes: Uint8Array): void {
    let done = 0;
    while (done < bytes.length) {
      if (this.blocks.length === 0 || this.tail === BLOCK_SIZE) {
        this.blocks.push(sparePool.pop() ?? Buffer.allocUnsafeSlow(BLOCK_SIZE));
        this.tail = 0;
      }
      const block = this.blocks[this.blocks.length - 1]!;
      const n = Math.min(bytes.length - done, BLOCK_SIZE - this.tail);
      block.set(n === bytes.length && done === 0 ? bytes : bytes.subarray(done, done + n), this.tail);
      this.tail += n;
      done += n;
    }
    this.size += bytes.length;
  }

  /** Blocks waiting in the process-wide pool (for tests). */
  static get spareBlocks(): number {
    return sparePool.length;
  }

  /** Writes the waiting bytes in order through `write` until it takes less than offered; -1 means closed. */
  writeTo(write: (data: Uint8Array, offset: number, length: number) => number): number {
    while (this.size > 0) {
      const block = this.blocks[0]!;
      const end = this.blocks.length === 1 ? this.tail : BLOCK_SIZE;
      const length = end - this.head;
      const written = write(block, this.head, length);
      if (written < 0) return -1;
      this.consume(written, length);
      if (written < length) return written;
    }
    return 0;
  }

  clear(): void {
    while (this.blocks.length > 0) this.release(this.blocks.shift()!);
    this.head = 0;
    this.tail = 0;
    this.size = 0;
  }

  private consume(n: number, available: number): void {
    this.size -= n;
    this.head += n;
    if (n < available) return;
    // The head block is used up.
    this.release(this.blocks.shift()!);
    this.head = 0;
    if (this.blocks.length === 0) this.tail = 0;
  }

  private release(block: Buffer): void {
    if (sparePool.length < SPARE_POOL_BLOCKS) sparePool.push(block);
  }
}
