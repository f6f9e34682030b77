/**
 * The file device: a sparse image file on the local filesystem, shared by every connection through one fd.
 * Trim punches holes, write-zeroes uses fallocate, FUA and flush are fdatasync. Every call completes synchronously.
 */
import fs from "node:fs";
import {
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  FALLOC_FL_ZERO_RANGE,
  LibcError,
  SEEK_DATA,
  SEEK_HOLE,
  fallocate,
  seekExtent,
} from "../../ffi/libc.ts";
import {
  DeviceError,
  checkOpen,
  checkRange,
  type BlockDevice,
  type DeviceCapabilities,
  type DeviceStats,
  type Extent,
  type WriteOptions,
  type ZeroOptions,
} from "../device.ts";
import { ioError as deviceIoError } from "../io-error.ts";
import { refuseIfReadOnly } from "../read-only.ts";
import { openStore } from "./open.ts";

function ioError(call: string, path: string, e: unknown): DeviceError {
  return deviceIoError("file", call, path, e);
}

export interface FileDeviceOptions {
  /** The image file. Created sparse when missing (then `size` is required); an existing file keeps its data. */
  readonly path: string;
  /** Size in bytes. For an existing file it must equal the file's size (absent: the file's size is used). */
  readonly size?: number;
  /** Advertised block size; default 4096 when the size is a multiple of it, else 512. */
  readonly blockSize?: number;
  /** Open an existing image for reading only (--read-only): never created, resized or written, shared lock. */
  readonly readOnly?: boolean;
}

const ZERO_CHUNK = new Uint8Array(1 << 20);
/** Reads up to this size go into a reused buffer; larger ones (rare) get their own. */
const SCRATCH_MAX = 4 << 20;
/** extents() answers for at most this many runs per call (the contract allows a prefix). */
const MAX_EXTENTS = 1024;

class FileDevice implements BlockDevice {
  readonly kind = "file";
  readonly size: number;
  readonly blockSize: number;
  readonly capabilities: DeviceCapabilities;
  private readonly fd: number;
  private canPunch: boolean;
  private canZeroRange = true;
  private closed = false;
  private lastAllocated = 0;
  private scratch = new Uint8Array(64 * 1024);

  constructor(readonly path: string, size: number | undefined, blockSize: number | undefined, private readonly readOnly: boolean) {
    const opened = openStore(path, size, blockSize, readOnly);
    this.fd = opened.fd;
    this.size = opened.size;
    this.blockSize = opened.blockSize;
    this.canPunch = opened.canPunch;
    this.capabilities = { fua: true, trim: opened.canPunch, fastZero: true, multiConn: true, persistent: true, splitWrites: true, readOnly };
  }

  read(offset: number, length: number): Uint8Array {
    checkOpen(this.closed, this.kind);
    checkRange(this.size, offset, length);
    const buf = this.readBuffer(length);
    let done = 0;
    try {
      while (done < length) {
        const n = fs.readSync(this.fd, buf, done, length - done, offset + done);
        if (n === 0) throw new Error(`the file ends at byte ${offset + done}, short of the device size ${this.size}`);
        done += n;
      }
    } catch (e) {
      throw ioError("read", this.path, e);
    }
    return buf;
  }

  /**
   * Where a read lands. Allocating per read cost more than the read itself (measured: 4 KiB preads 160k/s into
   * fresh buffers, 1.3M/s into a reused one), and the contract lets a result be a view that is only valid until
   * the caller has consumed it, so reads up to SCRATCH_MAX share one buffer.
   */
  private readBuffer(length: number): Uint8Array {
    if (length > SCRATCH_MAX) return new Uint8Array(length);
    if (this.scratch.length < length) this.scratch = new Uint8Array(Math.max(length, this.scratch.length * 2));
    return this.scratch.subarray(0, length);
  }

  write(offset: number, data: Uint8Array, options?: WriteOptions): void {
    checkOpen(this.closed, this.kind);
    refuseIfReadOnly(this.readOnly, this.kind);
    checkRange(this.size, offset, data.length);
    try {
      for (let done = 0; done < data.length; ) {
        done += fs.writeSync(this.fd, data, done, data.length - done, offset + done);
      }
      if (options?.fua === true) fs.fdatasyncSync(this.fd);
    } catch (e) {
      throw ioError("write", this.path, e);
    }
  }

  trim(offset: number, length: number, options?: WriteOptions): void {
    checkOpen(this.closed, this.kind);
    refuseIfReadOnly(this.readOnly, this.kind);
    checkRange(this.size, offset, length);
    // Without hole punching a trim does nothing (allowed: trimmed data may stay). Writing zeros instead would make
    // mkfs's whole-device discard write the whole image.
    if (length === 0 || !this.punch(offset, length)) return;
    if (options?.fua === true) this.flush();
  }

  writeZeroes(offset: number, length: number, options?: ZeroOptions): void {
    checkOpen(this.closed, this.kind);
    refuseIfReadOnly(this.readOnly, this.kind);
    checkRange(this.size, offset, length);
    if (length === 0) return;
    const done = (options?.noHole !== true && this.punch(offset, length)) || this.zeroRange(offset, length);
    if (!done) this.writeZeroBytes(offset, length);
    if (options?.fua === true) this.flush();
  }

  /** Punches a hole; false when the filesystem cannot (remembered, so it is asked only once). */
  private punch(offset: number, length: number): boolean {
    if (!this.canPunch) return false;
    this.canPunch = this.tryFallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, "trim", offset, length);
    return this.canPunch;
  }

  /** Zeroes a range keeping it allocated; false when the filesystem cannot (remembered). */
  private zeroRange(offset: number, length: number): boolean {
    if (!this.canZeroRange) return false;
    this.canZeroRange = this.tryFallocate(FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, "writeZeroes", offset, length);
    return this.canZeroRange;
  }

  /** fallocate; false when the filesystem does not support `mode` (EOPNOTSUPP), any other failure throws. */
  private tryFallocate(mode: number, call: string, offset: number, length: number): boolean {
    try {
      fallocate(this.fd, mode, offset, length);
      return true;
    } catch (e) {
      if (!(e instanceof LibcError && e.code === "EOPNOTSUPP")) throw ioError(call, this.path, e);
      return false;
    }
  }

  private writeZeroBytes(offset: number, length: number): void {
    for (let done = 0; done < length; ) {
      const n = Math.min(ZERO_CHUNK.length, length - done);
      this.write(offset + done, n === ZERO_CHUNK.length ? ZERO_CHUNK : ZERO_CHUNK.subarray(0, n));
      done += n;
    }
  }

  extents(offset: number, length: number): Extent[] {
    checkOpen(this.closed, this.kind);
    checkRange(this.size, offset, length);
    const out: Extent[] = [];
    const end = offset + length;
    let pos = offset;
    try {
      while (pos < end && out.length < MAX_EXTENTS) {
        const data = seekExtent(this.fd, pos, SEEK_DATA) ?? end;
        if (data > pos) {
          const stop = Math.min(data, end);
          out.push({ length: stop - pos, hole: true, zero: true });
          pos = stop;
          continue;
        }
        const stop = Math.min(seekExtent(this.fd, pos, SEEK_HOLE) ?? end, end);
        out.push({ length: stop - pos, hole: false, zero: false });
        pos = stop;
      }
    } catch (e) {
      throw ioError("extents", this.path, e);
    }
    return out;
  }

  flush(): void {
    checkOpen(this.closed, this.kind);
    try {
      fs.fdatasyncSync(this.fd);
    } catch (e) {
      throw ioError("flush", this.path, e);
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      fs.fdatasyncSync(this.fd);
    } catch (e) {
      throw ioError("close", this.path, e);
    } finally {
      // Closing the fd also releases the flock.
      fs.closeSync(this.fd);
    }
  }

  stats(): DeviceStats {
    if (!this.closed) this.lastAllocated = fs.fstatSync(this.fd).blocks * 512;
    return { gauges: [{ name: "allocated", value: this.lastAllocated, unit: "bytes", max: this.size }] };
  }
}

/**
 * Opens the image at `options.path`, creating it sparse when it is missing. Throws a user-facing Error when the
 * size does not match an existing file, the file is missing and no size is given, or another process holds it.
 */
export function openFileDevice(options: FileDeviceOptions): FileDevice {
  return new FileDevice(options.path, options.size, options.blockSize, options.readOnly === true);
}

export type { FileDevice };
