/**
 * Reused buffers that a session reads its socket into directly (instead of letting Bun copy every read into a
 * freshly allocated chunk). A buffer stays out of rotation while an asynchronous device write still holds a view
 * of it, so nothing it refers to is overwritten early.
 */

/**
 * Sizes measured with bench/ (mem device vs nbdkit): requests are read 64 KiB at a time (larger reads batch more
 * requests but hold their replies back: 4k random writes fell from 1.24x to 0.95x with 256 KiB), while the pieces of
 * a large WRITE payload are read 256 KiB at a time (1M sequential writes rose from 0.9x to 1.24x over 64 KiB).
 */
export const REQUEST_READ_SIZE = 64 * 1024;
export const PAYLOAD_PIECE_SIZE = 256 * 1024;

/**
 * The most Bun reads from a socket at once (measured with bun 1.4.5: 512 KiB). A shorter chunk emptied the socket
 * when it was read, so looking for more at once would cost a recv() that almost always finds nothing: one syscall in
 * four per request at queue depth 1 (counted with perf stat: 4 -> 3). Bytes that arrive later wake the event loop.
 */
export const TRANSPORT_READ_SIZE = 512 * 1024;

export interface ReceiveBuffer {
  readonly bytes: Buffer;
  /** Device writes still running on a view of this buffer. */
  holds: number;
}

export class ReceiveBuffers {
  private readonly all: ReceiveBuffer[] = [];

  constructor(private readonly size: number) {}

  /** A buffer no device write is holding. */
  free(): ReceiveBuffer {
    for (const b of this.all) if (b.holds === 0) return b;
    const fresh: ReceiveBuffer = { bytes: Buffer.allocUnsafeSlow(this.size), holds: 0 };
    this.all.push(fresh);
    return fresh;
  }
}
