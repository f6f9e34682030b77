// Command-line parsing: the seed's flag names and spellings, sizes, defaults, and usage errors that say what to do.
import { describe, expect, test } from "bun:test";
import { UsageError, parseFlags } from "../../src/cli/flags.ts";
import { SizeError, formatSize, parseSize } from "../../src/cli/sizes.ts";

describe("sizes", () => {
  test("binary units, decimal units, fractions and plain bytes", () => {
    expect(parseSize("20GiB")).toBe(20 * 1024 ** 3);
    expect(parseSize("100 MiB")).toBe(100 * 1024 ** 2);
    expect(parseSize("1.5G")).toBe(1.5 * 1024 ** 3);
    expect(parseSize("4096")).toBe(4096);
    expect(parseSize("512k")).toBe(512 * 1024);
    expect(parseSize("1GB")).toBe(1e9);
  });

  test("nonsense and fractional bytes are refused with the accepted forms", () => {
    expect(() => parseSize("lots")).toThrow(SizeError);
    expect(() => parseSize("12 parsecs")).toThrow(/like 4096, 512K/);
    expect(() => parseSize("1.5")).toThrow(/whole number of bytes/);
  });

  test("formatting picks a readable unit", () => {
    expect(formatSize(1024 ** 3)).toBe("1 GiB");
    expect(formatSize(1536 * 1024)).toBe("1.5 MiB");
    expect(formatSize(100)).toBe("100 B");
  });
});

describe("flags", () => {
  test("defaults: a 1 GiB mem device named usbd", () => {
    const o = parseFlags([]);
    expect(o.devType).toBe("mem");
    expect(o.storeSize).toBe(1024 ** 3);
    expect(o.storeName).toBe("usbd");
    expect(o.exportName).toBe("usbd");
    expect(o.headless).toBe(false);
    expect(o.listen).toBeUndefined();
  });

  test("--flag=value, --flag value, and the Go original's single-dash spellings", () => {
    const o = parseFlags(["-dev-type=file", "--store-size", "2GiB", "-store-name", "vol", "--headless", "--listen=unix:/tmp/x.sock"]);
    expect(o.devType).toBe("file");
    expect(o.storeSize).toBe(2 * 1024 ** 3);
    expect(o.storeSizeGiven).toBe(true);
    expect(o.storeName).toBe("vol");
    expect(o.exportName).toBe("vol");
    expect(o.headless).toBe(true);
    expect(o.listen).toBe("unix:/tmp/x.sock");
  });

  test("a positional /dev/nbdX names the kernel device; anything else is a usage error", () => {
    expect(parseFlags(["/dev/nbd3"]).nbdDevice).toBe("/dev/nbd3");
    expect(() => parseFlags(["/dev/sda"])).toThrow(UsageError);
  });

  test("usage errors name the flag and the fix", () => {
    expect(() => parseFlags(["--nope"])).toThrow(/unknown flag --nope; run usbd-tui --help/);
    expect(() => parseFlags(["--store-size"])).toThrow(/--store-size needs a value/);
    expect(() => parseFlags(["--store-size=1000"])).toThrow(/multiple of 512/);
    expect(() => parseFlags(["--block-size=3000"])).toThrow(/power of two/);
    expect(() => parseFlags(["--stats-interval=soon"])).toThrow(/number of seconds/);
    expect(() => parseFlags(["--headless=maybe"])).toThrow(/true or false/);
    expect(() => parseFlags(["--store-name=../etc"])).toThrow(/letters, digits/);
    expect(() => parseFlags(["--json", "--json"])).toThrow(/given twice/);
  });
});

describe("kernel flags", () => {
  test("defaults: netlink, one connection, no request timeout, 60 s for a restarted daemon to reattach", () => {
    const o = parseFlags([]);
    expect(o.nbdInterface).toBe("netlink");
    expect(o.connections).toBe(1);
    expect(o.nbdTimeout).toBe(0);
    expect(o.deadConnTimeout).toBe(60);
    expect(o.reattach).toBeUndefined();
    expect(o.force).toBe(false);
  });

  test("values are checked and kernel-only flags are refused with --listen", () => {
    const o = parseFlags(["--nbd-interface=ioctl", "--connections=4", "--nbd-timeout=30", "--dead-conn-timeout=120", "--reattach=/dev/nbd2", "--force"]);
    expect([o.nbdInterface, o.connections, o.nbdTimeout, o.deadConnTimeout, o.reattach, o.force]).toEqual(["ioctl", 4, 30, 120, "/dev/nbd2", true]);
    expect(() => parseFlags(["--nbd-interface=sysfs"])).toThrow(/netlink or ioctl/);
    expect(() => parseFlags(["--connections=0"])).toThrow(/from 1 to 64/);
    expect(() => parseFlags(["--reattach=/dev/sda"])).toThrow(/like \/dev\/nbd0/);
    expect(() => parseFlags(["--listen=unix:/tmp/s", "--connections=2"])).toThrow(/--connections only applies when attaching to the kernel/);
  });
});

describe("dedup flags", () => {
  test("defaults: lz4, 256 MiB of cache, and the block size left to the store", () => {
    const o = parseFlags(["--dev-type=dedup"]);
    expect(o).toMatchObject({ devType: "dedup", dedupCompress: "lz4", dedupMemcache: 256 * 1024 ** 2, dedupBlockSize: undefined, repair: false });
  });

  test("values in every spelling, and bad ones refused with the accepted forms", () => {
    const o = parseFlags(["-dedup-blocksize", "8KiB", "--dedup-compress=none", "--dedup-memcache", "64M"]);
    expect(o).toMatchObject({ dedupBlockSize: 8192, dedupCompress: "none", dedupMemcache: 64 * 1024 ** 2 });
    expect(() => parseFlags(["--dedup-compress=zstd"])).toThrow(/takes lz4 or none/);
    expect(() => parseFlags(["--dedup-blocksize=3000"])).toThrow(/power of two from 512 to 64KiB/);
    expect(() => parseFlags(["--dedup-memcache=1K"])).toThrow(/at least 1MiB/);
  });
});
