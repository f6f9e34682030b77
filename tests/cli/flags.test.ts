// Command-line parsing: the seed's flag names and spellings, sizes, defaults, and usage errors that say what to do.
import { describe, expect, test } from "bun:test";
import { UsageError, parseFlags } from "../../src/cli/flags.ts";
import { kernelAttachOptions } from "../../src/cli/kernel.ts";
import { SizeError, parseSize } from "../../src/cli/sizes.ts";
import { formatSize } from "../../src/shared/format-size.ts";

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
    expect(() => parseFlags(["--store-size=1000"])).toThrow(/--store-size 1000 is 1,000 bytes, not a multiple of the block size \(4 KiB\); the nearest valid size is 4,096 bytes/);
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

describe("objstore flags", () => {
  test("defaults: s3, the whole volume cached, 8 uploads every 10 s, local flushes, volume settings left to the manifest", () => {
    const o = parseFlags(["--dev-type=objstore"]).objstore;
    expect(o).toEqual({
      kind: "s3",
      config: undefined,
      objectSize: undefined,
      diskCache: 0,
      persistCache: false,
      aesKey: undefined,
      aesMode: undefined,
      compression: undefined,
      concurrency: 8,
      flushEvery: 10,
      flushMode: "local",
      takeover: false,
      snapshot: undefined,
      cloneOf: undefined,
      gcThreshold: undefined,
    });
  });

  test("values in every spelling, sizes in the CLI's units, and seconds with or without an s", () => {
    const cfg = '{"bucket":"vol","endpoint":"http://127.0.0.1:9000"}';
    const o = parseFlags([
      "-objstore-kind=local",
      "--objstore-cfg",
      cfg,
      "--objstore-objsize=1MiB",
      "--objstore-diskcache",
      "64M",
      "--objstore-persistcache",
      "--objstore-aeskey=env:USBD_KEY",
      "--objstore-aesmode=aes-ctr",
      "--objstore-compress=gzip",
      "--objstore-concurflush=16",
      "--objstore-flushevery=2.5s",
      "--objstore-flush-mode=remote",
      "--objstore-takeover",
      "--objstore-gc-threshold=0.3",
      "--objstore-clone-of=base@monday",
    ]).objstore;
    expect(o).toEqual({
      kind: "local",
      config: cfg,
      objectSize: 1 << 20,
      diskCache: 64 << 20,
      persistCache: true,
      aesKey: "env:USBD_KEY",
      aesMode: "aes-ctr",
      compression: "gzip",
      concurrency: 16,
      flushEvery: 2.5,
      flushMode: "remote",
      takeover: true,
      snapshot: undefined,
      cloneOf: "base@monday",
      gcThreshold: 0.3,
    });
    expect(parseFlags(["--objstore-snapshot=monday"]).objstore.snapshot).toBe("monday");
    expect(parseFlags(["--objstore-flushevery", "30"]).objstore.flushEvery).toBe(30);
    expect(parseFlags(["--objstore-flushevery=0.5"]).objstore.flushEvery).toBe(0.5);
    expect(parseFlags(["--objstore-aesmode=identity", "--objstore-compress=identity"]).objstore).toMatchObject({ aesMode: "identity", compression: "identity" });
    for (const spec of ["key:00ff", "file:/etc/usbd/volume.key", "env:K"]) expect(parseFlags([`--objstore-aeskey=${spec}`]).objstore.aesKey).toBe(spec);
  });

  test("bad values are usage errors that name the flag and the accepted forms", () => {
    const refused: [string, RegExp][] = [
      ["--objstore-kind=ftp", /--objstore-kind takes one of s3, local, .*not "ftp"/],
      ["--objstore-objsize=3000000", /--objstore-objsize must be a power of two from 4KiB to 1GiB, got 3000000/],
      ["--objstore-objsize=2KiB", /--objstore-objsize must be a power of two/],
      ["--objstore-objsize=lots", /--objstore-objsize: /],
      ["--objstore-diskcache=much", /--objstore-diskcache: /],
      ["--objstore-aesmode=rot13", /--objstore-aesmode takes aes-gcm, aes-ctr or identity, not "rot13"/],
      ["--objstore-compress=zstd", /--objstore-compress takes lz4, gzip or identity, not "zstd"/],
      ["--objstore-flush-mode=eventually", /--objstore-flush-mode takes local or remote, not "eventually"/],
      ["--objstore-concurflush=-1", /--objstore-concurflush must be from 0 \(a heuristic\) to 256, got "-1"/],
      ["--objstore-concurflush=1000", /from 0 \(a heuristic\) to 256/],
      ["--objstore-concurflush=two", /to 256, got "two"/],
      ["--objstore-flushevery=soon", /--objstore-flushevery takes a duration like 10 \(seconds\), 2.5s, 500ms, 1m or 1h30m \(at least 50ms\), or 0 for no timed uploads; not "soon"/],
      ["--objstore-flushevery=0.01", /at least 50ms/],
      ["--objstore-flushevery=-1", /--objstore-flushevery takes a duration/],
      ["--objstore-persistcache=maybe", /true or false/],
      ["--objstore-cfg", /--objstore-cfg needs a value/],
      ["--objstore-snapshot=../x", /--objstore-snapshot takes a snapshot name/],
      ["--objstore-clone-of=base", /--objstore-clone-of takes VOLUME@SNAPSHOT, not "base"/],
      ["--objstore-clone-of=a@b@c", /VOLUME@SNAPSHOT/],
      ["--objstore-gc-threshold=1", /--objstore-gc-threshold takes a fraction from 0 to 0.95/],
      ["--objstore-gc-threshold=half", /a fraction/],
    ];
    for (const [arg, message] of refused) {
      expect(() => parseFlags([arg]), arg).toThrow(UsageError);
      expect(() => parseFlags([arg]), arg).toThrow(message);
    }
  });

  test("an --objstore-aeskey without key:, file: or env: is refused without echoing what was given", () => {
    for (const spec of ["0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "hunter2-secret", "key:", "KEY:00ff", "/etc/usbd/volume.key"]) {
      let error: unknown;
      try {
        parseFlags([`--objstore-aeskey=${spec}`]);
      } catch (e) {
        error = e;
      }
      expect(error, spec).toBeInstanceOf(UsageError);
      expect((error as Error).message).toBe("--objstore-aeskey takes key:<hex|base64>, file:<path> or env:<VARIABLE>");
    }
  });
});

describe("the kernel attach a read-only open asks for", () => {
  test("a persistent store gets a reattach record, except when open read-only (the store's directory stays as it was)", () => {
    const writable = kernelAttachOptions(parseFlags(["--dev-type=file", "--store-dir=/srv/disks", "--store-name=vm1"]), true);
    const readOnly = kernelAttachOptions(parseFlags(["--dev-type=file", "--store-dir=/srv/disks", "--store-name=vm1", "--read-only"]), true);
    expect({ writable: writable.stateFile, readOnly: readOnly.stateFile }).toEqual({ writable: "/srv/disks/vm1.nbd.json", readOnly: undefined });
    expect(readOnly.backend).toBe(writable.backend);
  });
});
