/**
 * Data goes in and comes back out unchanged through real clients: nbdcopy and qemu-img for bulk copies, qemu-io for
 * patterns at unaligned offsets that must not disturb their neighbours.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { join } from "node:path";
import {
  type Daemon,
  DEV_TYPES,
  stopAndRemove,
  run,
  runResult,
  sha256File,
  skipReason,
  startDaemon,
  tempDir,
  writeRandomFile,
} from "./helpers.ts";

// Real clients and a real daemon: bun's 5 s default is too short (bunfig.toml has no per-test timeout setting).
setDefaultTimeout(90_000);

const skip = skipReason("copy suite", ["nbdcopy", "qemu-img", "qemu-io"]);
const MiB = 1024 * 1024;
const IMAGE_BYTES = 64 * MiB;
const DEVICE_BYTES = 256 * MiB;

for (const devType of DEV_TYPES) {
  describe.skipIf(skip !== undefined)(`bulk copies and patterns on the ${devType} device`, () => {
    let daemon: Daemon;
    let work: string;
    let source: string;
    let sourceSha: string;

    beforeAll(async () => {
      work = tempDir("copy");
      source = join(work, "source.img");
      sourceSha = await writeRandomFile(source, IMAGE_BYTES);
      daemon = await startDaemon({ devType, size: `${DEVICE_BYTES / MiB}MiB`, storeDir: work, storeName: "usbd" });
    });

    afterAll(() => stopAndRemove(daemon, work));

    test("nbdcopy of a 64 MiB random file into the device and back out keeps its sha256", async () => {
      await run(["nbdcopy", source, daemon.uri]);
      const back = join(work, "nbdcopy-back.img");
      // The device is larger than the file: copy all of it back and hash the first 64 MiB.
      await run(["nbdcopy", daemon.uri, back]);
      expect(Bun.file(back).size).toBe(DEVICE_BYTES);
      expect(await sha256File(back, IMAGE_BYTES)).toBe(sourceSha);
    });

    test("qemu-img convert into the device succeeds and qemu-img compare finds the contents identical", async () => {
      const other = join(work, "other.img");
      // Clear the region first so a stale earlier copy cannot make this test pass.
      await run(["qemu-io", "-f", "raw", "-c", `write -z 0 ${IMAGE_BYTES}`, daemon.uri]);
      await run(["qemu-img", "convert", "-f", "raw", "-O", "raw", source, daemon.uri]);
      // compare checks the device's first 64 MiB against the file and reports any difference as exit 1.
      await run(["qemu-img", "compare", "-f", "raw", "-F", "raw", source, `json:${devicePrefix(daemon.uri, IMAGE_BYTES)}`]);
      const back = join(work, "convert-back.img");
      await run(["qemu-img", "convert", "-f", "raw", "-O", "raw", `json:${devicePrefix(daemon.uri, IMAGE_BYTES)}`, back]);
      expect(await sha256File(back)).toBe(sourceSha);
      // And a known-different image must compare as different (the compare above can fail).
      await writeRandomFile(other, IMAGE_BYTES);
      const differs = await runResult(["qemu-img", "compare", "-q", "-f", "raw", "-F", "raw", other, `json:${devicePrefix(daemon.uri, IMAGE_BYTES)}`]);
      expect(differs.exitCode).toBe(1);
    });

    test("qemu-io patterns written at unaligned offsets read back, and their neighbours are untouched", async () => {
      const base = 128 * MiB;
      // A background pattern over the whole area, then small patterns at awkward offsets on top of it.
      await io(daemon.uri, `write -P 0x11 ${base} ${4 * MiB}`);
      const writes: [pattern: number, offset: number, length: number][] = [
        [0xa1, base + 1, 1],
        [0xa2, base + 4095, 2],
        [0xa3, base + 12345, 6789],
        [0xa4, base + MiB - 3, 7], // crosses the 1 MiB boundary
        [0xa5, base + 2 * MiB - 4097, 8195], // crosses the 2 MiB boundary at unaligned start and end
        [0xa6, base + 3 * MiB + 511, 513],
      ];
      for (const [p, off, len] of writes) await io(daemon.uri, `write -P 0x${p.toString(16)} ${off} ${len}`);
      for (const [p, off, len] of writes) {
        await io(daemon.uri, `read -P 0x${p.toString(16)} ${off} ${len}`);
        // The byte just before and just after still hold the background pattern.
        await io(daemon.uri, `read -P 0x11 ${off - 1} 1`);
        await io(daemon.uri, `read -P 0x11 ${off + len} 1`);
      }
      // Spans between the small writes are the background, untouched.
      await io(daemon.uri, `read -P 0x11 ${base + 2} 4093`);
      await io(daemon.uri, `read -P 0x11 ${base + 19134} ${MiB - 3 - 19134}`);
      await io(daemon.uri, `read -P 0x11 ${base + MiB + 4} ${MiB - 4097 - 4}`);
      await io(daemon.uri, `read -P 0x11 ${base + 3 * MiB + 1024} ${MiB - 1024}`);
    });

    test("a pattern check that should fail does fail (qemu-io reports a mismatch)", async () => {
      await io(daemon.uri, `write -P 0x5a ${200 * MiB} 4096`);
      const r = await runResult(["qemu-io", "-f", "raw", "-c", `read -P 0x5b ${200 * MiB} 4096`, daemon.uri]);
      expect(r.stdout + r.stderr).toContain("Pattern verification failed");
    });
  });
}

/** qemu-io one command against the device; fails when qemu-io reports an error or a pattern mismatch. */
async function io(uri: string, command: string): Promise<void> {
  const out = await run(["qemu-io", "-f", "raw", "-c", command, uri]);
  // qemu-io exits 0 even when a read's pattern does not match; it prints the mismatch instead.
  if (/Pattern verification failed/.test(out)) throw new Error(`qemu-io -c '${command}': ${out}`);
}

/** A qemu block spec for the first `length` bytes of the NBD export, so compare and convert see just that range. */
function devicePrefix(uri: string, length: number): string {
  const socket = new URL(uri.replace(/^nbd\+unix:/, "http:")).searchParams.get("socket");
  const exportName = decodeURIComponent(new URL(uri.replace(/^nbd\+unix:/, "http:")).pathname.slice(1));
  return JSON.stringify({
    driver: "raw",
    offset: 0,
    size: length,
    file: { driver: "nbd", server: { type: "unix", path: socket }, export: exportName },
  });
}
