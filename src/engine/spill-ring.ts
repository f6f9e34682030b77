/**
 * A reusable ring of bytes for reply data the socket has not taken yet. Replies that meet backpressure are copied
 * here instead of into fresh allocations, so a steady stream of large reads does not page-fault new memory for
 * every reply.
 */

const INITIAL_CAPACITY = 1024 * 1024;
/** An empty ring larger than this shrinks back, so one burst does not pin memory forever. */
const KEEP_CAPACITY = 16 * 1024 * 1024;

export class SpillRing {
  private buf: Buffer = Buffer.allocUnsafeSlow(INITIAL_CAPACITY);
  private head = 0;
  size = 0;

  push(bytes: Uint8Array): void {
    const n = bytes.length;
    if (this.size + n > this.buf.length) this.grow(this.size + n);
    const cap = this.buf.length;
    const tail = (this.head + this.size) % cap;
    const first = Math.min(n, cap - tail);
    this.buf.set(first === n ? bytes : bytes.subarray(0, first), tail);
    if (first < n) this.buf.set(bytes.subarray(first), 0);
    this.size += n;
  }

  /** Writes the contiguous bytes at the head through `write` until it takes less than offered; -1 means closed. */
  writeTo(write: (data: Uint8Array, offset: number, length: number) => number): number {
    while (this.size > 0) {
      const length = Math.min(this.size, this.buf.length - this.head);
      const written = write(this.buf, this.head, length);
      if (written < 0) return -1;
      this.consume(written);
      if (written < length) return written;
    }
    return 0;
  }

  clear(): void {
    this.head = 0;
    this.size = 0;
    if (this.buf.length > KEEP_CAPACITY) this.buf = Buffer.allocUnsafeSlow(INITIAL_CAPACITY);
  }

  private consume(n: number): void {
    this.size -= n;
    this.head = this.size === 0 ? 0 : (this.head + n) % this.buf.length;
    if (this.size === 0 && this.buf.length > KEEP_CAPACITY) this.clear();
  }

  private grow(needed: number): void {
    let cap = this.buf.length;
    while (cap < needed) cap *= 2;
    const next = Buffer.allocUnsafeSlow(cap);
    const first = Math.min(this.size, this.buf.length - this.head);
    this.buf.copy(next, 0, this.head, this.head + first);
    if (first < this.size) this.buf.copy(next, first, 0, this.size - first);
    this.buf = next;
    this.head = 0;
  }
}
