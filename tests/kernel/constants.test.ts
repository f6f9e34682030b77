// ioctl numbers: the _IO/_IOR arithmetic against values from linux/nbd.h and linux/fs.h as compiled on x86-64.
import { describe, expect, test } from "bun:test";
import type { BlockDevice } from "../../src/devices/device.ts";
import { createMemDevice } from "../../src/devices/mem/index.ts";
import { kernelBlockSize, kernelServerFlags } from "../../src/engine/kernel/attachment.ts";
import { BLKGETSIZE64, NBD_IOCTL } from "../../src/engine/kernel/constants.ts";

describe("ioctl numbers", () => {
  test("NBD ioctls are _IO(0xab, n)", () => {
    expect(NBD_IOCTL).toEqual({
      SET_SOCK: 0xab00,
      SET_BLKSIZE: 0xab01,
      SET_SIZE: 0xab02,
      DO_IT: 0xab03,
      CLEAR_SOCK: 0xab04,
      CLEAR_QUE: 0xab05,
      PRINT_DEBUG: 0xab06,
      SET_SIZE_BLOCKS: 0xab07,
      DISCONNECT: 0xab08,
      SET_TIMEOUT: 0xab09,
      SET_FLAGS: 0xab0a,
    });
  });

  test("BLKGETSIZE64 is _IOR(0x12, 114, size_t)", () => {
    expect(BLKGETSIZE64).toBe(0x80081272);
  });
});

describe("what the kernel is told about a device", () => {
  const TF = { HAS_FLAGS: 1, READ_ONLY: 2, SEND_FLUSH: 4, SEND_FUA: 8, SEND_TRIM: 32, SEND_WRITE_ZEROES: 64, CAN_MULTI_CONN: 256 };
  /** Only the fields the kernel parameters are computed from. */
  const shape = (size: number, blockSize: number, capabilities: BlockDevice["capabilities"] = {}) =>
    ({ ...createMemDevice({ size: 1 << 20 }), size, blockSize, capabilities }) as BlockDevice;

  test("FLUSH and FUA always, TRIM when the device trims, CAN_MULTI_CONN only with several sockets", () => {
    const mem = createMemDevice({ size: 1 << 20 });
    const base = TF.HAS_FLAGS | TF.SEND_FLUSH | TF.SEND_FUA | TF.SEND_TRIM | TF.SEND_WRITE_ZEROES;
    expect(kernelServerFlags(mem, 1)).toBe(base);
    expect(kernelServerFlags(mem, 4)).toBe(base | TF.CAN_MULTI_CONN);
    expect(kernelServerFlags(shape(1 << 20, 4096, { readOnly: true, trim: false }), 1)).toBe(
      TF.HAS_FLAGS | TF.SEND_FLUSH | TF.SEND_FUA | TF.SEND_WRITE_ZEROES | TF.READ_ONLY,
    );
  });

  test("the block size is capped at 4 KiB and divides the size", () => {
    expect(kernelBlockSize(shape(1 << 20, 65536))).toBe(4096);
    expect(kernelBlockSize(shape((1 << 20) + 1024, 4096))).toBe(1024);
    expect(kernelBlockSize(shape(1536, 512))).toBe(512);
  });
});
