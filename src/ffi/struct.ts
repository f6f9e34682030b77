/**
 * Packing and unpacking C structs and netlink messages: fixed-width integers in host byte order (little-endian
 * on every platform Bun runs on), byte runs, NUL-terminated strings and alignment padding.
 */

/** Appends fields to a growing buffer; `finish()` returns exactly the bytes written. */
export class ByteWriter {
  private buffer: Uint8Array;
  private view: DataView;
  private used = 0;

  constructor(initialCapacity = 64) {
    this.buffer = new Uint8Array(initialCapacity);
    this.view = new DataView(this.buffer.buffer);
  }

  /** Bytes written so far. */
  get length(): number {
    return this.used;
  }

  // Each writer reserves room before touching `buffer` or `view`: growing replaces both.
  u8(value: number): this {
    const at = this.room(1);
    this.view.setUint8(at, value);
    return this;
  }

  u16(value: number): this {
    const at = this.room(2);
    this.view.setUint16(at, value, true);
    return this;
  }

  u32(value: number): this {
    const at = this.room(4);
    this.view.setUint32(at, value >>> 0, true);
    return this;
  }

  u64(value: number | bigint): this {
    const at = this.room(8);
    this.view.setBigUint64(at, BigInt(value), true);
    return this;
  }

  bytes(data: Uint8Array): this {
    const at = this.room(data.length);
    this.buffer.set(data, at);
    return this;
  }

  /** `text` as UTF-8 followed by a NUL. */
  cstring(text: string): this {
    return this.bytes(Buffer.from(text, "utf8")).u8(0);
  }

  zeros(count: number): this {
    const at = this.room(count);
    this.buffer.fill(0, at, this.used);
    return this;
  }

  /** Pads with zeros up to the next multiple of `alignment`. */
  align(alignment: number): this {
    return this.zeros((alignment - (this.used % alignment)) % alignment);
  }

  /** Overwrites a u16 or u32 written earlier (a length known only once what follows is written). */
  patchU16(at: number, value: number): this {
    this.view.setUint16(at, value, true);
    return this;
  }

  patchU32(at: number, value: number): this {
    this.view.setUint32(at, value >>> 0, true);
    return this;
  }

  finish(): Uint8Array {
    return this.buffer.slice(0, this.used);
  }

  /** Reserves `n` bytes and returns where they start. */
  private room(n: number): number {
    const at = this.used;
    if (at + n > this.buffer.length) {
      const bigger = new Uint8Array(Math.max(this.buffer.length * 2, at + n));
      bigger.set(this.buffer.subarray(0, at));
      this.buffer = bigger;
      this.view = new DataView(bigger.buffer);
    }
    this.used = at + n;
    return at;
  }
}

/** Thrown when a struct or message is shorter than its own fields say. */
export class TruncatedError extends Error {}

/** Reads fields in order from a byte range; every read checks that the bytes are there. */
export class ByteReader {
  private readonly view: DataView;
  private at: number;

  constructor(
    private readonly source: Uint8Array,
    start = 0,
    private readonly end = source.length,
  ) {
    this.view = new DataView(source.buffer, source.byteOffset, source.byteLength);
    this.at = start;
  }

  get offset(): number {
    return this.at;
  }

  get remaining(): number {
    return this.end - this.at;
  }

  u8(): number {
    return this.view.getUint8(this.take(1));
  }

  u16(): number {
    return this.view.getUint16(this.take(2), true);
  }

  u32(): number {
    return this.view.getUint32(this.take(4), true);
  }

  i32(): number {
    return this.view.getInt32(this.take(4), true);
  }

  /** A u64 as a number; values past 2^53 lose precision (sizes and flags here stay far below). */
  u64(): number {
    return Number(this.view.getBigUint64(this.take(8), true));
  }

  /** A view (not a copy) of the next `n` bytes. */
  bytes(n: number): Uint8Array {
    const at = this.take(n);
    return this.source.subarray(at, at + n);
  }

  skip(n: number): void {
    this.take(n);
  }

  private take(n: number): number {
    if (n < 0 || this.at + n > this.end) throw new TruncatedError(`need ${n} bytes at offset ${this.at}, only ${this.end - this.at} left`);
    const at = this.at;
    this.at += n;
    return at;
  }
}
