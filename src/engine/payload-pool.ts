/**
 * Reusable buffers for WRITE payloads that arrive split across socket reads, so a steady write load does not
 * allocate (and page-fault) a fresh buffer for every request.
 */

/** Smallest pooled size; requests below it share this class. */
const MIN_CLASS = 4096;
/** Buffers kept per size class: enough for a deep queue of writes held by an async device, bounded in bytes. */
const KEEP_PER_CLASS = 16;
const KEEP_BYTES_PER_CLASS = 32 * 1024 * 1024;

function sizeClass(length: number): number {
  return length <= MIN_CLASS ? MIN_CLASS : 2 ** Math.ceil(Math.log2(length));
}

export class PayloadPool {
  private readonly free = new Map<number, Buffer[]>();

  /** A buffer of at least `length` bytes; its contents are garbage. */
  take(length: number): Buffer {
    const size = sizeClass(length);
    return this.free.get(size)?.pop() ?? Buffer.allocUnsafeSlow(size);
  }

  /** Returns a buffer from `take` once nothing refers to it any more. */
  give(buffer: Buffer): void {
    const size = buffer.length;
    let list = this.free.get(size);
    if (list === undefined) {
      list = [];
      this.free.set(size, list);
    }
    const keep = Math.max(2, Math.min(KEEP_PER_CLASS, Math.floor(KEEP_BYTES_PER_CLASS / size)));
    if (list.length < keep) list.push(buffer);
  }
}
