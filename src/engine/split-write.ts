/**
 * One client WRITE handed to the device piece by piece as its payload arrives, for devices that declare
 * `splitWrites`: each byte is copied once, from the socket's chunk into the device, instead of being assembled
 * into a request-sized buffer first.
 */
import type { BlockDevice } from "../devices/device.ts";
import type { Request } from "./protocol/requests.ts";

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

  /** Writes the next piece of the payload; after a failure the rest is only counted, not written. */
  piece(data: Uint8Array): void {
    const at = this.req.offset + this.received;
    this.received += data.length;
    if (this.failed) return;
    try {
      const result = this.device.write(at, data);
      if (result instanceof Promise) {
        this.pending++;
        result.then(
          () => this.settle(),
          (error: unknown) => {
            this.fail(error);
            this.settle();
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

  private settle(): void {
    this.pending--;
    if (this.pending === 0) this.onSettled?.();
  }
}
