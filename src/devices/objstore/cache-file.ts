/**
 * The local cache file: one slot of `objectSize` bytes per log object with local bytes (the open one, those waiting
 * for upload, and stored ones whose chunks are cached), at `slot * objectSize`. A free slot is a hole; evicting
 * punches bytes out again. Reads and writes are synchronous (page cache), the sync that commits need is not (it can
 * take long on a big cache).
 */
import fs from "node:fs";
import { FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, LibcError, fallocate } from "../../ffi/libc.ts";

const ZERO_CHUNK = Buffer.alloc(1 << 20);

export class CacheFile {
  /** Cleared once punching failed (a filesystem without hole support); zeros are written instead from then on. */
  private canPunch = true;
  /** Free slots below `nextSlot`, reused lowest-first so the file stays compact. */
  private readonly free: number[] = [];
  private nextSlot = 0;

  /** `fd` comes from openLocked; the CacheFile owns it from here. */
  constructor(
    readonly fd: number,
    readonly path: string,
    readonly objectSize: number,
  ) {}

  /** Marks the slots that the catalog says are in use; every other slot below the highest is free. */
  adoptSlots(used: Iterable<number>): void {
    const inUse = new Set(used);
    this.nextSlot = inUse.size === 0 ? 0 : Math.max(...inUse) + 1;
    this.free.length = 0;
    for (let slot = this.nextSlot - 1; slot >= 0; slot--) if (!inUse.has(slot)) this.free.push(slot);
  }

  /** A free slot (reading as zeros). */
  takeSlot(): number {
    return this.free.pop() ?? this.nextSlot++;
  }

  /** Gives a slot back once nothing refers to it any more; its bytes are punched out first. */
  releaseSlot(slot: number): void {
    this.zero(slot, 0, this.objectSize);
    this.free.push(slot);
    this.free.sort((a, b) => b - a);
  }

  read(slot: number, offset: number, into: Uint8Array, intoOffset: number, length: number): void {
    let done = 0;
    const at = slot * this.objectSize + offset;
    while (done < length) {
      const n = fs.readSync(this.fd, into, intoOffset + done, length - done, at + done);
      // Past the end of the file is a hole that was never written.
      if (n === 0) {
        into.fill(0, intoOffset + done, intoOffset + length);
        return;
      }
      done += n;
    }
  }

  write(slot: number, offset: number, data: Uint8Array): void {
    const at = slot * this.objectSize + offset;
    for (let done = 0; done < data.length; ) done += fs.writeSync(this.fd, data, done, data.length - done, at + done);
  }

  /** Makes bytes of a slot read as zeros, giving their disk space back where the filesystem can. */
  zero(slot: number, offset: number, length: number): void {
    const at = slot * this.objectSize + offset;
    if (this.canPunch) {
      try {
        fallocate(this.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, at, length);
        return;
      } catch (e) {
        if (!(e instanceof LibcError) || (e.code !== "EOPNOTSUPP" && e.code !== "ENOSYS")) throw e;
        this.canPunch = false;
      }
    }
    for (let done = 0; done < length; ) {
      const n = Math.min(ZERO_CHUNK.length, length - done);
      this.write(slot, offset + done, ZERO_CHUNK.subarray(0, n));
      done += n;
    }
  }

  /** fdatasync on the thread pool. */
  sync(): Promise<void> {
    return new Promise((resolve, reject) => fs.fdatasync(this.fd, (e) => (e ? reject(e) : resolve())));
  }

  /** Bytes the file takes on disk. */
  allocatedBytes(): number {
    return fs.fstatSync(this.fd).blocks * 512;
  }

  /** Slots the file spans (in use or free). */
  get slotCount(): number {
    return this.nextSlot;
  }

  /** Cuts the file after the last slot in use (free slots at the end are holes already; this tidies `ls`). */
  trimEnd(): void {
    // free is sorted descending, so the highest free slot comes first.
    while (this.free.length > 0 && this.free[0] === this.nextSlot - 1) {
      this.free.shift();
      this.nextSlot--;
    }
    fs.ftruncateSync(this.fd, this.nextSlot * this.objectSize);
  }

  close(): void {
    fs.closeSync(this.fd);
  }
}
