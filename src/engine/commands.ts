/**
 * Runs accepted requests against the device: dispatch by command, FUA emulation, central WRITE_ZEROES emulation,
 * and the FLUSH barrier over this connection's writes still in flight. Results go back through `Outcome`, which
 * the session turns into replies.
 */
import { type BlockDevice, DeviceError, type Extent, type WriteOptions, resolveCapabilities } from "../devices/device.ts";
import { CMD, CMD_FLAG_FAST_ZERO, CMD_FLAG_FUA, CMD_FLAG_NO_HOLE, CMD_FLAG_REQ_ONE } from "./protocol/constants.ts";
import type { Request } from "./protocol/requests.ts";
import { emulateWriteZeroes } from "./zeroes.ts";

/** Where a request's result goes. */
export interface Outcome {
  completed(req: Request, bytes: number): void;
  failed(req: Request, error: unknown): void;
  read(req: Request, data: Uint8Array): void;
  blockStatus(req: Request, extents: readonly Extent[], onlyOne: boolean): void;
}

const FUA: WriteOptions = { fua: true };

export class CommandRunner {
  private readonly nativeFua: boolean;
  private readonly writesInFlight = new Set<Promise<unknown>>();

  constructor(
    private readonly device: BlockDevice,
    private readonly outcome: Outcome,
  ) {
    this.nativeFua = resolveCapabilities(device).fua;
  }

  /** Runs any accepted command but WRITE (whose payload the session receives first). */
  execute(req: Request): void {
    const device = this.device;
    try {
      switch (req.type) {
        case CMD.READ: {
          const result = device.read(req.offset, req.length);
          if (result instanceof Promise) {
            result.then(
              (data) => this.outcome.read(req, data),
              (error: unknown) => this.outcome.failed(req, error),
            );
          } else {
            this.outcome.read(req, result);
          }
          return;
        }
        case CMD.FLUSH:
          return this.track(req, this.flushAfterWrites());
        case CMD.TRIM:
          return this.track(req, this.withFua(req, device.trim(req.offset, req.length, this.fuaOption(req))), true);
        case CMD.WRITE_ZEROES:
          return this.track(req, this.zeroes(req), true);
        case CMD.CACHE:
          // A hint: devices that keep their data local have nothing to prefetch; the range was validated.
          if (device.cache === undefined) return this.outcome.completed(req, 0);
          return this.track(req, device.cache(req.offset, req.length));
        case CMD.BLOCK_STATUS: {
          const extents = device.extents?.(req.offset, req.length) ?? [{ length: req.length, hole: false, zero: false }];
          const onlyOne = (req.flags & CMD_FLAG_REQ_ONE) !== 0;
          if (extents instanceof Promise) {
            extents.then(
              (list) => this.outcome.blockStatus(req, list, onlyOne),
              (error: unknown) => this.outcome.failed(req, error),
            );
          } else {
            this.outcome.blockStatus(req, extents, onlyOne);
          }
          return;
        }
      }
    } catch (error) {
      this.outcome.failed(req, error);
    }
  }

  /**
   * Runs a WRITE with its whole payload. Returns undefined when it finished synchronously (the device is done
   * with `data`), or a promise that settles once the device is done with it.
   */
  write(req: Request, data: Uint8Array): Promise<void> | undefined {
    let result: unknown;
    try {
      result = this.device.write(req.offset, data, this.fuaOption(req));
      if ((req.flags & CMD_FLAG_FUA) !== 0 && !this.nativeFua) result = this.withFua(req, result);
    } catch (error) {
      this.outcome.failed(req, error);
      return undefined;
    }
    if (!(result instanceof Promise)) {
      this.outcome.completed(req, req.length);
      return undefined;
    }
    const settled = result.then(
      () => this.outcome.completed(req, req.length),
      (error: unknown) => this.outcome.failed(req, error),
    );
    this.trackWrite(settled);
    return settled;
  }

  /** Makes a later FLUSH wait for a write-like request that is still running (one handed over in pieces, say). */
  trackWrite(settled: Promise<void>): void {
    this.writesInFlight.add(settled);
    void settled.finally(() => this.writesInFlight.delete(settled));
  }

  private fuaOption(req: Request): WriteOptions | undefined {
    return this.nativeFua && (req.flags & CMD_FLAG_FUA) !== 0 ? FUA : undefined;
  }

  /** Emulates FUA with a flush after the operation when the device does not honour it itself. */
  private withFua(req: Request, result: unknown): unknown {
    if ((req.flags & CMD_FLAG_FUA) === 0 || this.nativeFua) return result;
    return Promise.resolve(result).then(() => this.device.flush());
  }

  private zeroes(req: Request): unknown {
    const noHole = (req.flags & CMD_FLAG_NO_HOLE) !== 0;
    const fua = (req.flags & CMD_FLAG_FUA) !== 0 && this.nativeFua;
    if (this.device.writeZeroes) {
      return this.withFua(req, this.device.writeZeroes(req.offset, req.length, { noHole, fua }));
    }
    if ((req.flags & CMD_FLAG_FAST_ZERO) !== 0) {
      throw new DeviceError("ENOTSUP", "the device cannot zero faster than writing");
    }
    return this.withFua(req, emulateWriteZeroes(this.device, req.offset, req.length, fua));
  }

  /** FLUSH covers every write-like request (WRITE, TRIM, WRITE_ZEROES) received before it, even those still running. */
  private async flushAfterWrites(): Promise<void> {
    if (this.writesInFlight.size > 0) await Promise.allSettled([...this.writesInFlight]);
    await this.device.flush();
  }

  /** Answers `req` when `result` settles; a write-like request still running holds back later FLUSHes. */
  private track(req: Request, result: unknown, writeLike = false): void {
    if (result instanceof Promise) {
      const settled = result.then(
        () => this.outcome.completed(req, req.length),
        (error: unknown) => this.outcome.failed(req, error),
      );
      if (writeLike) this.trackWrite(settled);
    } else {
      this.outcome.completed(req, req.length);
    }
  }
}
