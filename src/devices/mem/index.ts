/**
 * The in-memory device, usbd-tui's default: sparse 1 MiB pages allocated on first write, so a fresh device of any
 * size costs nothing until written. Every call completes synchronously.
 */
import {
  checkOpen,
  checkRange,
  type BlockDevice,
  type DeviceCapabilities,
  type DeviceStats,
  type Extent,
  type ReclaimResult,
  type ZeroOptions,
} from "../device.ts";
import { resolveGeometry } from "../geometry.ts";
import { refuseIfReadOnly } from "../read-only.ts";

export interface MemDeviceOptions {
  /** Size in bytes: a positive multiple of 512 (and of blockSize). */
  readonly size: number;
  /** Advertised block size; default 4096 when the size is a multiple of it, else 512. */
  readonly blockSize?: number;
  /** Serve it read-only (--read-only): all zeroes, every write refused. */
  readonly readOnly?: boolean;
}

const PAGE = 1 << 20;
/** Reads of never-written pages return views of this; it is never written. */
const ZERO_PAGE = new Uint8Array(PAGE);
/** extents() answers for at most this many pages per call (the contract allows a prefix). */
const MAX_EXTENT_PAGES = 1 << 16;

/** Calls `visit` for each page piece of [offset, offset+length): page index, offset in page, length, bytes before. */
function eachPage(offset: number, length: number, visit: (index: number, inPage: number, n: number, done: number) => void): void {
  for (let done = 0; done < length; ) {
    const pos = offset + done;
    const index = Math.floor(pos / PAGE);
    const inPage = pos - index * PAGE;
    const n = Math.min(PAGE - inPage, length - done);
    visit(index, inPage, n, done);
    done += n;
  }
}

/** A mem device. Every call completes synchronously, so the types promise values, not promises. */
class MemDevice implements BlockDevice {
  readonly kind = "mem";
  readonly blockSize: number;
  readonly capabilities: DeviceCapabilities;
  private readonly baseCapabilities = {
    // Nothing to make durable, so FUA is honoured trivially.
    fua: true,
    trim: true,
    fastZero: true,
    multiConn: true,
    persistent: false,
    splitWrites: true,
  };
  // A Map, not an array: a device of 2^50 bytes has 2^30 pages, almost all of which never exist.
  private readonly pages = new Map<number, Uint8Array>();
  private allocated = 0;
  private closed = false;

  constructor(readonly size: number, blockSize: number, private readonly readOnly: boolean) {
    this.capabilities = { ...this.baseCapabilities, readOnly };
    this.blockSize = blockSize;
  }

  read(offset: number, length: number): Uint8Array {
    checkOpen(this.closed, this.kind);
    checkRange(this.size, offset, length);
    const index = Math.floor(offset / PAGE);
    const inPage = offset - index * PAGE;
    if (inPage + length <= PAGE) {
      const page = this.pages.get(index) ?? ZERO_PAGE;
      return page.subarray(inPage, inPage + length);
    }
    return this.readAcross(offset, length);
  }

  private readAcross(offset: number, length: number): Uint8Array {
    // A fresh buffer is already zero, so unallocated pages need no copy.
    const out = new Uint8Array(length);
    eachPage(offset, length, (index, inPage, n, done) => {
      const page = this.pages.get(index);
      if (page !== undefined) out.set(page.subarray(inPage, inPage + n), done);
    });
    return out;
  }

  write(offset: number, data: Uint8Array): void {
    checkOpen(this.closed, this.kind);
    refuseIfReadOnly(this.readOnly, this.kind);
    const length = data.length;
    checkRange(this.size, offset, length);
    const index = Math.floor(offset / PAGE);
    const inPage = offset - index * PAGE;
    if (inPage + length <= PAGE) {
      this.page(index).set(data, inPage);
      return;
    }
    eachPage(offset, length, (i, off, n, done) => this.page(i).set(data.subarray(done, done + n), off));
  }

  /** The page at `index`, allocated on first use (the last page is cut to the device's end). */
  private page(index: number): Uint8Array {
    let page = this.pages.get(index);
    if (page === undefined) {
      page = new Uint8Array(Math.min(PAGE, this.size - index * PAGE));
      this.pages.set(index, page);
      this.allocated += page.length;
    }
    return page;
  }

  trim(offset: number, length: number): void {
    this.writeZeroes(offset, length);
  }

  writeZeroes(offset: number, length: number, options?: ZeroOptions): void {
    checkOpen(this.closed, this.kind);
    refuseIfReadOnly(this.readOnly, this.kind);
    checkRange(this.size, offset, length);
    const release = options?.noHole !== true;
    const end = offset + length;
    let pos = offset;
    while (pos < end) {
      const index = Math.floor(pos / PAGE);
      const off = pos - index * PAGE;
      const page = this.pages.get(index);
      const pageEnd = index * PAGE + (page?.length ?? PAGE);
      const n = Math.min(pageEnd, end) - pos;
      if (page !== undefined) {
        if (release && off === 0 && n === page.length) {
          this.pages.delete(index);
          this.allocated -= page.length;
        } else {
          page.fill(0, off, off + n);
        }
      }
      pos += n;
    }
  }

  extents(offset: number, length: number): Extent[] {
    checkOpen(this.closed, this.kind);
    checkRange(this.size, offset, length);
    const out: Extent[] = [];
    const end = offset + length;
    let pos = offset;
    let runStart = offset;
    let runAllocated: boolean | undefined;
    for (let pages = 0; pos < end && pages < MAX_EXTENT_PAGES; pages++) {
      const index = Math.floor(pos / PAGE);
      const allocated = this.pages.has(index);
      if (runAllocated !== undefined && allocated !== runAllocated) {
        out.push({ length: pos - runStart, hole: !runAllocated, zero: !runAllocated });
        runStart = pos;
      }
      runAllocated = allocated;
      pos = Math.min((index + 1) * PAGE, end);
    }
    if (runAllocated !== undefined) out.push({ length: pos - runStart, hole: !runAllocated, zero: !runAllocated });
    return out;
  }

  flush(): void {
    checkOpen(this.closed, this.kind);
  }

  /**
   * Gives back pages that hold only zeros: whole pages are freed when trimmed, but a page trimmed or zeroed piece
   * by piece (or written with zeros) stays allocated until this finds it.
   */
  reclaim(): ReclaimResult {
    checkOpen(this.closed, this.kind);
    let freed = 0;
    let bytes = 0;
    for (const [index, page] of this.pages) {
      if (Buffer.compare(page, ZERO_PAGE.subarray(0, page.length)) !== 0) continue;
      this.pages.delete(index);
      this.allocated -= page.length;
      bytes += page.length;
      freed++;
    }
    return { bytes, detail: freed === 0 ? "no all-zero pages to free" : `${freed.toLocaleString("en-US")} all-zero pages freed` };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.pages.clear();
    this.allocated = 0;
  }

  stats(): DeviceStats {
    return { gauges: [{ name: "allocated", value: this.allocated, unit: "bytes", max: this.size }] };
  }
}

/** Creates an empty in-memory device. Its contents are lost on close. */
export function createMemDevice(options: MemDeviceOptions): MemDevice {
  return new MemDevice(options.size, resolveGeometry("mem", options.size, options.blockSize), options.readOnly === true);
}

export type { MemDevice };
