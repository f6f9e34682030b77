/**
 * --read-only with real clients: nbdinfo sees a read-only export; qemu-io reads the data and will not open it for
 * writing; writes, zeroes and trims sent anyway (libnbd with its client-side checks off) are answered EPERM by the
 * server; and the store's files are byte for byte what they were before the read-only session, for every
 * persistent device kind (a read-only open adds no file to the store, except the objstore's own read-only cache).
 */
import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { createMemDevice } from "../../src/devices/mem/index.ts";
import { kernelServerFlags } from "../../src/engine/kernel/attachment.ts";
import { TFLAG_READ_ONLY } from "../../src/engine/protocol/constants.ts";
import { type Daemon, type DevType, removeDir, run, runResult, sha256, skipReason, startDaemon, tempDir } from "./helpers.ts";

setDefaultTimeout(120_000);

const PYTHON = "/usr/bin/python3";
const skip =
  skipReason("read-only suite", ["nbdinfo", "qemu-io"]) ??
  (Bun.spawnSync([PYTHON, "-c", "import nbd"]).exitCode === 0 ? undefined : "read-only suite: python3-libnbd is not installed");

/** Every file under `dir` with its sha256, by path relative to `dir`. */
function fingerprint(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const visit = (at: string): void => {
    for (const entry of readdirSync(at)) {
      const full = join(at, entry);
      if (statSync(full).isDirectory()) visit(full);
      else out.set(relative(dir, full), sha256(readFileSync(full)));
    }
  };
  visit(dir);
  return out;
}

const KIND_ARGS: Record<Exclude<DevType, "mem">, readonly string[]> = {
  file: [],
  dedup: [],
  objstore: ["--objstore-kind=local", "--objstore-flushevery=1"],
};

/**
 * What the server answers to a write, a write-zeroes and a trim that libnbd sends although the export is read-only
 * (STRICT_COMMANDS off: libnbd would otherwise refuse them itself, and the server would never see them).
 */
async function forcedWrites(uri: string): Promise<string> {
  const script = [
    "import nbd, errno",
    "h = nbd.NBD()",
    "h.set_strict_mode(h.get_strict_mode() & ~nbd.STRICT_COMMANDS)",
    `h.connect_uri(${JSON.stringify(uri)})`,
    "for name, call in [('write', lambda: h.pwrite(b'x' * 4096, 0)), ('zero', lambda: h.zero(4096, 0)), ('trim', lambda: h.trim(4096, 0))]:",
    "    try:",
    "        call()",
    "        print(name, 'ok')",
    "    except nbd.Error as e:",
    "        print(name, errno.errorcode.get(e.errno, e.errno))",
    "h.shutdown()",
  ].join("\n");
  return (await run([PYTHON, "-c", script])).trim();
}

async function qemuIo(uri: string, command: string, readOnly = false): Promise<{ exitCode: number; output: string }> {
  const r = await runResult(["qemu-io", "-f", "raw", ...(readOnly ? ["-r"] : []), "-c", command, uri]);
  return { exitCode: r.exitCode, output: r.stdout + r.stderr };
}

describe("a read-only device on the kernel path", () => {
  test("is attached with NBD_FLAG_READ_ONLY, so /dev/nbdX is a read-only block device", () => {
    expect(kernelServerFlags(createMemDevice({ size: 1 << 20, readOnly: true }), 1) & TFLAG_READ_ONLY).toBe(TFLAG_READ_ONLY);
    expect(kernelServerFlags(createMemDevice({ size: 1 << 20 }), 1) & TFLAG_READ_ONLY).toBe(0);
  });
});

describe.skipIf(skip !== undefined)("--read-only on the mem device", () => {
  let daemon: Daemon | undefined;
  afterAll(async () => {
    await daemon?.stop();
  });

  test("-r advertises a read-only export of zeroes and answers writes, zeroes and trims with EPERM", async () => {
    daemon = await startDaemon({ devType: "mem", size: "64MiB", extraArgs: ["-r"] });
    const info = JSON.parse(await run(["nbdinfo", "--json", daemon.uri]));
    expect(info.exports[0].is_read_only).toBe(true);
    expect(await forcedWrites(daemon.uri)).toBe("write EPERM\nzero EPERM\ntrim EPERM");
  });
});

for (const kind of ["file", "dedup", "objstore"] as const) {
  describe.skipIf(skip !== undefined)(`--read-only on the ${kind} device`, () => {
    const storeDir = tempDir(`ro-${kind}`);
    const args = KIND_ARGS[kind];
    let daemon: Daemon | undefined;

    afterAll(async () => {
      daemon?.kill();
      removeDir(storeDir);
    });

    test("serves the data read-only, refuses every write-like request with EPERM, and changes no store file", async () => {
      const writer = await startDaemon({ devType: kind, size: "64MiB", storeDir, extraArgs: args });
      await run(["qemu-io", "-f", "raw", "-c", "write -P 0x5a 1M 2M", "-c", "flush", writer.uri]);
      await writer.stop();
      const before = fingerprint(storeDir);

      daemon = await startDaemon({ devType: kind, size: "", storeDir, extraArgs: [...args, "--read-only"] });
      const info = JSON.parse(await run(["nbdinfo", "--json", daemon.uri]));
      expect(info.exports[0].is_read_only).toBe(true);
      expect(info.exports[0]["export-size"]).toBe(64 * 1024 * 1024);
      const read = await qemuIo(daemon.uri, "read -P 0x5a 1M 2M", true);
      expect(read.output).not.toContain("Pattern verification failed");
      expect(read.exitCode).toBe(0);
      // qemu-io sees the read-only flag and will not open the export for writing at all.
      const refused = await qemuIo(daemon.uri, "write -P 0x11 0 64k");
      expect(refused.exitCode).not.toBe(0);
      expect(refused.output).toContain("Permission denied");
      expect(await forcedWrites(daemon.uri)).toBe("write EPERM\nzero EPERM\ntrim EPERM");
      await run(["qemu-io", "-f", "raw", "-r", "-c", "read -P 0x5a 1M 64k", daemon.uri]);
      await daemon.stop();
      daemon = undefined;

      const after = fingerprint(storeDir);
      for (const [file, hash] of before) expect(`${file} ${after.get(file)}`).toBe(`${file} ${hash}`);
      // The objstore reads the latest state through a cache of its own (<volume>@latest.*), never the writer's.
      const added = [...after.keys()].filter((f) => !before.has(f) && !f.includes("@latest"));
      expect(added).toEqual([]);
    });
  });
}
