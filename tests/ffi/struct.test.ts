// Struct packing: little-endian fields, growth past the first allocation, alignment, and bounds-checked reads.
import { describe, expect, test } from "bun:test";
import { ByteReader, ByteWriter, TruncatedError } from "../../src/ffi/struct.ts";

describe("ByteWriter", () => {
  test("writes little-endian fields and keeps them across growth", () => {
    const w = new ByteWriter(2);
    w.u8(1).u16(0x0302).u32(0x07060504).u64(2 ** 40 + 8).bytes(Uint8Array.of(9, 9)).cstring("hey").align(4);
    const bytes = w.finish();
    expect(Buffer.from(bytes).toString("hex")).toBe("01" + "0203" + "04050607" + "0800000000010000" + "0909" + "68657900" + "000000");
    expect(bytes.length % 4).toBe(0);
  });

  test("patches a length written before what it measures", () => {
    const w = new ByteWriter(1).u16(0).zeros(300);
    w.patchU16(0, w.length);
    expect(new ByteReader(w.finish()).u16()).toBe(302);
  });
});

describe("ByteReader", () => {
  test("reads what the writer wrote, and refuses to read past the end", () => {
    const r = new ByteReader(new ByteWriter().u32(0xfffffffe).u64(12345).u8(7).finish());
    expect(r.i32()).toBe(-2);
    expect(r.u64()).toBe(12345);
    expect(r.remaining).toBe(1);
    expect(() => r.u16()).toThrow(TruncatedError);
  });
});
