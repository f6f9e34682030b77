// The device registry: every kind is created from CLI-level options, and mistakes name the flag to fix.
import { afterAll, describe, expect, test } from "bun:test";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { DEVICE_KINDS, createDevice, isDeviceKind } from "../../src/devices/index.ts";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "usbd-registry-"));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe("createDevice", () => {
  test("knows mem, file, dedup and objstore", () => {
    expect(DEVICE_KINDS).toEqual(["mem", "file", "dedup", "objstore"]);
    expect(isDeviceKind("file")).toBe(true);
    expect(isDeviceKind("toString")).toBe(false);
  });

  test("creates a dedup store with the --dedup-* options, and reopens it without a size", async () => {
    const opts = { storeDir: dir, storeName: "dd", defaultSize: 1 << 24, dedup: { blockSize: 8192, compression: "none" as const } };
    const dev = await createDevice("dedup", opts);
    expect(dev.kind).toBe("dedup");
    expect(dev.size).toBe(1 << 24);
    expect(dev.blockSize).toBe(8192);
    await dev.close();
    const again = await createDevice("dedup", { ...opts, defaultSize: 1 << 30, dedup: {} });
    expect(again.size).toBe(1 << 24);
    expect(again.blockSize).toBe(8192);
    await again.close();
  });

  test("creates an objstore volume with the --objstore-* options, and reopens it without a size", async () => {
    const opts = {
      storeDir: dir,
      storeName: "ob",
      defaultSize: 1 << 24,
      blockSize: 512,
      objstore: { kind: "local", objectSize: 1 << 20, compression: "identity" as const, aesMode: "identity" as const },
    };
    const dev = await createDevice("objstore", opts);
    expect(dev.kind).toBe("objstore");
    expect(dev.size).toBe(1 << 24);
    expect(dev.blockSize).toBe(512);
    await dev.write(1 << 20, new Uint8Array(4096).fill(0x5a));
    await dev.close();
    // The kind's default directory for the local kind: <storeDir>/objects.
    expect(fs.existsSync(path.join(dir, "objects", "ob", "manifest.json"))).toBe(true);
    // Without a size or the volume's settings: the manifest supplies them (a differing defaultSize is ignored).
    const again = await createDevice("objstore", { storeDir: dir, storeName: "ob", defaultSize: 1 << 30, objstore: { kind: "local" } });
    expect(again.size).toBe(1 << 24);
    expect(await again.read(1 << 20, 4096)).toEqual(new Uint8Array(4096).fill(0x5a));
    await again.close();
  });

  test("creates a mem device of the given size", async () => {
    const dev = await createDevice("mem", { size: 1 << 20 });
    expect(dev.kind).toBe("mem");
    expect(dev.size).toBe(1 << 20);
    await dev.close();
  });

  test("creates the file device at <storeDir>/<storeName>.img", async () => {
    const dev = await createDevice("file", { size: 1 << 20, storeDir: dir, storeName: "disk0", blockSize: 512 });
    expect(dev.kind).toBe("file");
    expect(dev.blockSize).toBe(512);
    expect(fs.statSync(path.join(dir, "disk0.img")).size).toBe(1 << 20);
    await dev.close();
  });

  test("names the missing flag or the unknown kind", async () => {
    await expect(createDevice("mem", {})).rejects.toThrow("the mem device needs --store-size");
    await expect(createDevice("file", { size: 4096, storeName: "x" })).rejects.toThrow("needs --store-dir");
    await expect(createDevice("objstore", { size: 4096, storeName: "x" })).rejects.toThrow("the objstore device needs --store-dir");
    await expect(createDevice("tape", {})).rejects.toThrow('unknown device type "tape"; --dev-type must be one of: mem, file');
  });
});
