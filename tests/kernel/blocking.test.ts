// Blocking kernel calls in a worker: results and errno-carrying errors come back to the serving thread, which keeps
// running meanwhile.
import { describe, expect, test } from "bun:test";
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LibcError } from "../../src/ffi/libc.ts";
import { runBlocking } from "../../src/engine/kernel/blocking.ts";

describe("runBlocking", () => {
  test("a failing ioctl comes back as a LibcError with the call, the request and the errno name", async () => {
    const dir = mkdtempSync(join(tmpdir(), "usbd-blocking-"));
    const fd = openSync(join(dir, "f"), "w");
    try {
      // NBD_DO_IT on a regular file: the kernel answers ENOTTY.
      const error = await runBlocking({ op: "ioctl", fd, request: 0xab03, arg: 0 }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(LibcError);
      expect((error as LibcError).code).toBe("ENOTTY");
      expect((error as LibcError).message).toMatch(/^ioctl\(fd \d+, request 0xab03\): ENOTTY/);
    } finally {
      closeSync(fd);
      rmSync(dir, { recursive: true });
    }
  });

  test("fsync of a path succeeds in the worker while this thread keeps running timers", async () => {
    const dir = mkdtempSync(join(tmpdir(), "usbd-blocking-"));
    const path = join(dir, "data");
    writeFileSync(path, "x");
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    try {
      expect(await runBlocking({ op: "fsync", path })).toBe(0);
      await Bun.sleep(5);
      expect(ticks).toBeGreaterThan(0);
    } finally {
      clearInterval(timer);
      rmSync(dir, { recursive: true });
    }
    await expect(runBlocking({ op: "fsync", path: join(dir, "gone") })).rejects.toThrow(/ENOENT|no such file/i);
  });
});
