/**
 * The framework API on the real kernel, in-process: `attach()` a device of the test's own, watch NBD_CMD_STATUS,
 * and see a connection the kernel drops (a request that outlived --nbd-timeout) replaced with RECONFIGURE, the
 * timed-out request answered on the new connection, nothing lost.
 */
import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { attach, createMemDevice, type BlockDevice, type Logger } from "../../src/index.ts";
import { kernelConnected, requireVm, runResult } from "./helpers.ts";

requireVm();
setDefaultTimeout(180_000);

const MiB = 1024 * 1024;

/** A mem device whose read of one block stalls once for `stallMs`: long enough for the kernel to time it out. */
function stallingOnce(offset: number, stallMs: number): BlockDevice & { stalled: boolean } {
  const mem = createMemDevice({ size: 64 * MiB });
  const device = Object.create(mem) as BlockDevice & { stalled: boolean };
  device.stalled = false;
  device.read = (at: number, length: number) => {
    if (at <= offset && offset < at + length && !device.stalled) {
      device.stalled = true;
      const data = Buffer.from(mem.read(at, length) as Uint8Array);
      return Bun.sleep(stallMs).then(() => data);
    }
    return mem.read(at, length);
  };
  return device;
}

describe("attach() from the framework API", () => {
  test("a request that outlives the kernel's timeout costs a reconnect, not the device", async () => {
    const lines: string[] = [];
    const log: Logger = { log: (level, message) => lines.push(`${level} ${message}`) };
    const offset = 8 * MiB;
    const device = stallingOnce(offset, 5000);
    await device.write(offset, Buffer.alloc(4096, 0x5a));
    const attachment = await attach(device, { log, timeoutSeconds: 2, deadConnTimeoutSeconds: 30 });
    let lost: string | undefined;
    attachment.onLost((reason) => (lost = reason));
    try {
      expect(kernelConnected(attachment.index)).toBe(true);
      expect(attachment.connected()).toBe(true);
      const dd = await runResult(["dd", `if=${attachment.path}`, "bs=4096", "count=1", `skip=${offset / 4096}`, "iflag=direct", "status=none"], { timeoutMs: 60_000 });
      expect(dd.exitCode).toBe(0);
      expect(Buffer.from(dd.stdout, "latin1").equals(Buffer.alloc(4096, 0x5a))).toBe(true);
      expect(device.stalled).toBe(true);
      expect(lines.some((l) => l.includes("dropped 1 connection(s); reconnecting"))).toBe(true);
      expect(lost).toBeUndefined();
    } finally {
      await attachment.detach();
      await device.close();
    }
    expect(kernelConnected(attachment.index)).toBe(false);
  });
});
