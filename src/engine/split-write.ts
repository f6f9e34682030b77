/**
 * One client WRITE handed to the device piece by piece as its payload arrives, for devices that declare
 * `splitWrites`: each piece goes to the device while it is still in the CPU cache,
 * instead of being assembled into a request-sized buffer first.
 */
import type { BlockDevice } from "../devices/device.ts";
import type { Request } from "./protocol/requests.ts";
import type { ReceiveBuffer } from "./receive-buffers.ts";

export class SplitWrite {
  /** Payload bytes received (and handed to the device) so far. */
  received = 0;
  private pending = 0;
  private failed = false;
  private error: unknown;
  private onSettled: (() => void) | undefined;

  constructor(
    readonly req: Request,
    private readonly device: BlockDevice,
  ) {}

  get complete(): boolean {
    return this.received === this.req.length;
  }

  /**
   * Writes the next piece of the payload; after a failure the rest is only counted, not written. `holder` is the
   * reused receive buffer `data` is a view of, kept out of rotation while an asynchronous write still reads it.
   */
  piece(data: Uint8Array, holder: ReceiveBuffer | undefined): void {
    const at = this.req.offset + this.received;
    this.received += data.length;
    if (this.failed) return;
    try {
      const result = this.device.write(at, data);
      if (result instanceof Promise) {
        this.pending++;
        if (holder) holder.holds++;
        result.then(
          () => this.settle(holder),
          (error: unknown) => {
            this.fail(error);
            this.settle(holder);
          },
        );
      }
    } catch (error) {
      this.fail(error);
    }
  }

  /**
   * Once every byte has arrived: calls `done` with the first error (or `undefined`) as soon as every piece has
   * been stored, synchronously when they all were. Returns a promise only when it had to wait.
   */
  finish(done: (failed: boolean, error: unknown) => void): Promise<void> | undefined {
    if (this.pending === 0) {
      done(this.failed, this.error);
      return undefined;
    }
    return new Promise<void>((resolve) => {
      this.onSettled = () => {
        done(this.failed, this.error);
        resolve();
      };
    });
  }

  private fail(error: unknown): void {
    if (this.failed) return;
    this.failed = true;
    this.error = error;
  }

  private settle(holder: ReceiveBuffer | undefined): void {
    if (holder) holder.holds--;
    this.pending--;
    if (this.pending === 0) this.onSettled?.();
  }
}
