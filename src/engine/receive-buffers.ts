/**
 * Reused buffers that a session reads its socket into directly (instead of letting Bun copy every read into a
 * freshly allocated chunk). A buffer stays out of rotation while an asynchronous device write still holds a view
 * of it, so nothing it refers to is overwritten early.
 */

/**
 * Small enough that a large WRITE payload mostly arrives by a direct read into its destination rather than here
 * (then copied), large enough to take a whole queue of small requests in one syscall.
 */
const RECEIVE_BUFFER_SIZE = 64 * 1024;

export interface ReceiveBuffer {
  readonly bytes: Buffer;
  /** Device writes still running on a view of this buffer. */
  holds: number;
}

export class ReceiveBuffers {
  private readonly all: ReceiveBuffer[] = [];

  /** A buffer no device write is holding. */
  free(): ReceiveBuffer {
    for (const b of this.all) if (b.holds === 0) return b;
    const fresh: ReceiveBuffer = { bytes: Buffer.allocUnsafeSlow(RECEIVE_BUFFER_SIZE), holds: 0 };
    this.all.push(fresh);
    return fresh;
  }
}
