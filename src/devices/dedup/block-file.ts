/**
 * The blocks file: slots written and read by unit address, lz4 on the way in and out, and chunks punched out when
 * they empty. Synchronous, like the rest of the dedup device.
 */
import fs from "node:fs";
import { compressSync, uncompressSync } from "lz4-napi";
import { FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, LibcError, fallocate } from "../../ffi/libc.ts";
import { DeviceError } from "../device.ts";
import { CHUNK_UNITS, COMPRESSED_HEADER, UNITS_PER_BLOCK, type DedupCompression } from "./layout.ts";

/** looksRandom() samples 32 runs of 8 bytes; from 150 distinct values a block looks random. */
const SAMPLE_RUNS = 32;
const SAMPLE_RUN_BYTES = 8;
const RANDOM_LOOKING = 150;

/** A block prepared for storing: the bytes of its slot and the slot size in units. */
export interface EncodedBlock {
  readonly bytes: Uint8Array;
  readonly units: number;
  /** lz4 was tried and did not save a unit. */
  readonly missed: boolean;
  /** The block might have compressed, but lz4 was not tried (`tryLz4` false). */
  readonly skipped: boolean;
}

export class BlockFile {
  readonly unit: number;
  /** Cleared once hole punching failed, so it is not tried again. */
  private canPunch = true;
  /** For looksRandom(): which byte values this sampling round has seen (marked with the round's number). */
  private readonly seen = new Uint32Array(256);
  private sampleRound = 0;

  /** `fd` comes from `openLocked`; the BlockFile owns it from here. */
  constructor(
    readonly fd: number,
    readonly path: string,
    readonly blockSize: number,
  ) {
    this.unit = blockSize / UNITS_PER_BLOCK;
  }

  /**
   * What to store for `block` (exactly one block of content): its lz4 form in the smallest slot it fits when that
   * takes fewer units than the raw block, else the raw bytes. lz4 is tried only when `tryLz4` (the caller's back-off,
   * see block-run.ts) and when the block does not look random.
   */
  encode(block: Uint8Array, compression: DedupCompression, tryLz4 = true): EncodedBlock {
    if (compression !== "lz4" || this.looksRandom(block)) return { bytes: block, units: UNITS_PER_BLOCK, missed: false, skipped: false };
    if (!tryLz4) return { bytes: block, units: UNITS_PER_BLOCK, missed: false, skipped: true };
    const packed = compressSync(Buffer.isBuffer(block) ? block : Buffer.from(block.buffer, block.byteOffset, block.byteLength));
    const units = Math.ceil((COMPRESSED_HEADER + packed.length) / this.unit);
    if (units >= UNITS_PER_BLOCK) return { bytes: block, units: UNITS_PER_BLOCK, missed: true, skipped: false };
    const bytes = Buffer.allocUnsafe(COMPRESSED_HEADER + packed.length);
    bytes.writeUInt16LE(packed.length, 0);
    bytes.set(packed, COMPRESSED_HEADER);
    return { bytes, units, missed: false, skipped: false };
  }

  /**
   * A cheap test for data lz4 cannot shrink (already compressed, encrypted, random): lz4-napi took 13-40 us per
   * 4 KiB call on such data, several times the block's SHA-256, for nothing. 32 runs of 8 consecutive bytes are
   * sampled across the block (runs, not a fixed stride, which can fall in step with a repeating structure):
   * uniformly random data shows about 162 distinct values among those 256 bytes, and from 150 on the block counts as
   * random. Fewer distinct values do not prove the opposite (fio's incompressible buffers showed under 64), which is
   * why the caller also backs off after misses.
   */
  looksRandom(block: Uint8Array): boolean {
    const stride = Math.floor(block.length / SAMPLE_RUNS);
    if (++this.sampleRound === 0xffffffff) {
      this.seen.fill(0);
      this.sampleRound = 1;
    }
    const round = this.sampleRound;
    let distinct = 0;
    for (let run = 0; run < block.length; run += stride) {
      for (let i = run; i < run + SAMPLE_RUN_BYTES; i++) {
        const byte = block[i]!;
        if (this.seen[byte] !== round) {
          this.seen[byte] = round;
          if (++distinct >= RANDOM_LOOKING) return true;
        }
      }
    }
    return false;
  }

  /** Writes `bytes` (one encoded block, or several slots laid out in file order) starting at `slot`. */
  write(slot: number, bytes: Uint8Array): void {
    const at = slot * this.unit;
    for (let done = 0; done < bytes.length; ) done += fs.writeSync(this.fd, bytes, done, bytes.length - done, at + done);
  }

  /** Reads `length` raw bytes at byte `position` of the file into `into` at `offset`. */
  readRaw(into: Uint8Array, offset: number, length: number, position: number): void {
    const got = this.readUpTo(into, offset, length, position);
    // Every slot the map refers to was written before it was referenced: a short file lost data.
    if (got < length) throw this.corrupt(Math.floor((position + got) / this.unit), `the file ends at byte ${position + got}`);
  }

  /** Reads up to `length` bytes, fewer only where the file ends; returns how many. */
  private readUpTo(into: Uint8Array, offset: number, length: number, position: number): number {
    let done = 0;
    while (done < length) {
      const n = fs.readSync(this.fd, into, offset + done, length - done, position + done);
      if (n === 0) break;
      done += n;
    }
    return done;
  }

  /** Decodes the compressed block in the slot at `slot` (of `units` units) into `into` at `offset`. */
  readCompressed(slot: number, units: number, into: Uint8Array, offset: number): void {
    const stored = Buffer.allocUnsafe(units * this.unit);
    // Only the encoded bytes of a slot are written, so the last slot in the file may end early.
    const got = this.readUpTo(stored, 0, stored.length, slot * this.unit);
    const length = got >= COMPRESSED_HEADER ? stored.readUInt16LE(0) : 0;
    if (got < COMPRESSED_HEADER + length) throw this.corrupt(slot, `the file ends at byte ${slot * this.unit + got}`);
    if (COMPRESSED_HEADER + length > stored.length) throw this.corrupt(slot, `length ${length} overruns its ${units}-unit slot`);
    let block: Buffer;
    try {
      block = uncompressSync(stored.subarray(COMPRESSED_HEADER, COMPRESSED_HEADER + length));
    } catch (e) {
      throw this.corrupt(slot, e instanceof Error ? e.message : String(e));
    }
    if (block.length !== this.blockSize) throw this.corrupt(slot, `it decompresses to ${block.length} bytes`);
    into.set(block, offset);
  }

  /** One whole block's content from its slot. */
  readBlock(slot: number, units: number, into: Uint8Array, offset: number): void {
    if (units === UNITS_PER_BLOCK) this.readRaw(into, offset, this.blockSize, slot * this.unit);
    else this.readCompressed(slot, units, into, offset);
  }

  sync(): void {
    fs.fdatasyncSync(this.fd);
  }

  /** Gives an empty chunk's disk space back to the filesystem; its contents are dead, so failure only costs space. */
  release(chunk: number): void {
    if (!this.canPunch) return;
    const bytes = CHUNK_UNITS * this.unit;
    try {
      fallocate(this.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, chunk * bytes, bytes);
    } catch (e) {
      if (!(e instanceof LibcError)) throw e;
      this.canPunch = false;
    }
  }

  /** Bytes the file takes on disk. */
  allocatedBytes(): number {
    return fs.fstatSync(this.fd).blocks * 512;
  }

  close(): void {
    fs.closeSync(this.fd);
  }

  private corrupt(slot: number, why: string): DeviceError {
    return new DeviceError("EIO", `dedup device: the block in slot ${slot} of ${this.path} is corrupt (${why}); run usbd-tui check`);
  }
}
