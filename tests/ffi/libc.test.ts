// The libc bindings against the real kernel: hole punching, SEEK_DATA/SEEK_HOLE, errno names, ioctl.
import { afterAll, describe, expect, test } from "bun:test";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import {
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  FALLOC_FL_ZERO_RANGE,
  LOCK_EX,
  LOCK_NB,
  LibcError,
  SEEK_DATA,
  SEEK_HOLE,
  fallocate,
  flock,
  ioctl,
  lseek,
  seekExtent,
} from "../../src/ffi/libc.ts";
import { socketpair } from "../../src/ffi/sockets.ts";
import { describeErrno, errnoName, errnoNumber } from "../../src/ffi/errno.ts";

const MiB = 1 << 20;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "usbd-ffi-"));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

let n = 0;
function tempFile(size: number): number {
  const fd = fs.openSync(path.join(dir, `f${n++}.img`), "w+");
  fs.ftruncateSync(fd, size);
  return fd;
}

function readAt(fd: number, offset: number, length: number): Uint8Array {
  const buf = new Uint8Array(length);
  expect(fs.readSync(fd, buf, 0, length, offset)).toBe(length);
  return buf;
}

describe("fallocate", () => {
  test("punching a hole drops st_blocks and reads back zeros", () => {
    const fd = tempFile(4 * MiB);
    fs.writeSync(fd, new Uint8Array(4 * MiB).fill(0xab), 0, 4 * MiB, 0);
    fs.fsyncSync(fd);
    const before = fs.fstatSync(fd).blocks;
    fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, MiB, 2 * MiB);
    const after = fs.fstatSync(fd).blocks;
    expect(before - after).toBeGreaterThanOrEqual((2 * MiB) / 512 - 8);
    expect(fs.fstatSync(fd).size).toBe(4 * MiB);
    expect(readAt(fd, MiB, 2 * MiB).every((b) => b === 0)).toBe(true);
    expect(readAt(fd, MiB - 1, 1)[0]).toBe(0xab);
    expect(readAt(fd, 3 * MiB, 1)[0]).toBe(0xab);
    fs.closeSync(fd);
  });

  test("zero range reads back zeros and keeps neighbours", () => {
    const fd = tempFile(MiB);
    fs.writeSync(fd, new Uint8Array(MiB).fill(7), 0, MiB, 0);
    fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, 4096, 8192);
    expect(readAt(fd, 4096, 8192).every((b) => b === 0)).toBe(true);
    expect(readAt(fd, 4095, 1)[0]).toBe(7);
    expect(readAt(fd, 12288, 1)[0]).toBe(7);
    fs.closeSync(fd);
  });

  test("offsets beyond 2^32 are passed as 64-bit numbers", () => {
    const fd = tempFile(8 * 2 ** 30);
    fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 5 * 2 ** 30, MiB);
    fs.writeSync(fd, new Uint8Array([1]), 0, 1, 6 * 2 ** 30);
    expect(seekExtent(fd, 0, SEEK_DATA)).toBe(6 * 2 ** 30);
    fs.closeSync(fd);
  });

  test("a failure names the call, the fd and the errno", () => {
    const fd = tempFile(MiB);
    let err: unknown;
    try {
      // PUNCH_HOLE without KEEP_SIZE is always rejected by the kernel.
      fallocate(fd, FALLOC_FL_PUNCH_HOLE, 0, 4096);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(LibcError);
    const le = err as LibcError;
    expect(le.code).toBe("EOPNOTSUPP");
    expect(le.errno).toBe(95);
    expect(le.message).toBe(`fallocate(fd ${fd}): EOPNOTSUPP (Operation not supported)`);
    fs.closeSync(fd);
  });

  test("a bad fd yields EBADF", () => {
    expect(() => fallocate(987654, 0, 0, 4096)).toThrow("fallocate(fd 987654): EBADF (Bad file descriptor)");
  });
});

describe("SEEK_DATA / SEEK_HOLE", () => {
  test("finds data and holes in a sparse file", () => {
    const fd = tempFile(16 * MiB);
    fs.writeSync(fd, new Uint8Array(MiB).fill(1), 0, MiB, 4 * MiB);
    fs.writeSync(fd, new Uint8Array(MiB).fill(2), 0, MiB, 10 * MiB);
    expect(seekExtent(fd, 0, SEEK_DATA)).toBe(4 * MiB);
    expect(seekExtent(fd, 4 * MiB, SEEK_HOLE)).toBe(5 * MiB);
    expect(seekExtent(fd, 5 * MiB, SEEK_DATA)).toBe(10 * MiB);
    expect(seekExtent(fd, 10 * MiB, SEEK_HOLE)).toBe(11 * MiB);
    // Inside a hole SEEK_HOLE stays put; past the last data SEEK_DATA says ENXIO, which becomes null.
    expect(seekExtent(fd, 12 * MiB, SEEK_HOLE)).toBe(12 * MiB);
    expect(seekExtent(fd, 11 * MiB, SEEK_DATA)).toBeNull();
    expect(seekExtent(fd, 16 * MiB, SEEK_HOLE)).toBeNull();
    fs.closeSync(fd);
  });

  test("lseek throws on a bad whence", () => {
    const fd = tempFile(MiB);
    expect(() => lseek(fd, 0, 99)).toThrow(/^lseek\(fd \d+\): EINVAL/);
    fs.closeSync(fd);
  });
});

describe("flock", () => {
  test("a second open file description cannot take the exclusive lock", () => {
    const p = path.join(dir, "lock.img");
    const a = fs.openSync(p, "w+");
    const b = fs.openSync(p, "r+");
    flock(a, LOCK_EX | LOCK_NB);
    expect(() => flock(b, LOCK_EX | LOCK_NB)).toThrow(/EAGAIN/);
    fs.closeSync(a);
    flock(b, LOCK_EX | LOCK_NB);
    fs.closeSync(b);
  });
});

describe("ioctl", () => {
  test("FIONREAD on a socketpair counts the pending bytes", () => {
    const [x, y] = socketpair();
    fs.writeSync(x, new Uint8Array([1, 2, 3, 4, 5]));
    const count = new Int32Array(1);
    expect(ioctl(y, 0x541b, count)).toBe(0);
    expect(count[0]).toBe(5);
    fs.closeSync(x);
    fs.closeSync(y);
  });

  test("an ioctl a file does not know yields ENOTTY", () => {
    const fd = tempFile(MiB);
    expect(() => ioctl(fd, 0x541b + 0x1000, new Int32Array(1))).toThrow(/ENOTTY \(Inappropriate ioctl for device\)/);
    fs.closeSync(fd);
  });

  // losetup needs root and /dev/loop-control; the machines this project runs on have both.
  const canLoop = process.getuid?.() === 0 && fs.existsSync("/dev/loop-control") && Bun.which("losetup", { PATH: `${process.env.PATH}:/usr/sbin:/sbin` }) !== null;
  test.skipIf(!canLoop)("BLKGETSIZE64 on a loop device reports its size in bytes", () => {
    const image = path.join(dir, "loop.img");
    fs.writeFileSync(image, "");
    fs.truncateSync(image, 12 * MiB + 4096);
    const loop = Bun.spawnSync(["losetup", "--find", "--show", image]);
    expect(loop.exitCode).toBe(0);
    const device = loop.stdout.toString().trim();
    try {
      const fd = fs.openSync(device, "r");
      const size = new BigUint64Array(1);
      ioctl(fd, 0x80081272, size);
      fs.closeSync(fd);
      expect(Number(size[0])).toBe(12 * MiB + 4096);
    } finally {
      Bun.spawnSync(["losetup", "--detach", device]);
    }
  });
});

describe("errno names", () => {
  test("known and unknown numbers", () => {
    expect(errnoName(25)).toBe("ENOTTY");
    expect(describeErrno(6)).toBe("ENXIO (No such device or address)");
    expect(describeErrno(4000)).toBe("errno 4000");
    expect(errnoNumber("EOPNOTSUPP")).toBe(95);
  });
});
