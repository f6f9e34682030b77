/**
 * What libnbd's nbdinfo sees: the export's size and advertised capabilities, the export list, and (on the file
 * device) a trimmed range reported as a hole by base:allocation block status.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { type Daemon, DEV_TYPES, SERVER, run, skipReason, startDaemon, stopAndRemove, tempDir } from "./helpers.ts";

// Real clients and a real daemon: bun's 5 s default is too short (bunfig.toml has no per-test timeout setting).
setDefaultTimeout(90_000);

const skip = skipReason("nbdinfo suite", ["nbdinfo", "qemu-io"]);
const MiB = 1024 * 1024;

interface Extent {
  offset: number;
  length: number;
  type: number;
  description: string;
}

for (const devType of DEV_TYPES) {
  describe.skipIf(skip !== undefined)(`nbdinfo against the ${devType} device`, () => {
    let daemon: Daemon;
    let storeDir: string;

    beforeAll(async () => {
      storeDir = tempDir("nbdinfo");
      daemon = await startDaemon({ devType, size: "1GiB", storeDir, storeName: "usbd" });
    });

    afterAll(() => stopAndRemove(daemon, storeDir));

    test("reports the export size and advertises flush, FUA, trim, zero and multi-conn", async () => {
      const info = JSON.parse(await run(["nbdinfo", "--json", daemon.uri]));
      const exp = info.exports[0];
      expect(exp["export-size"]).toBe(1024 * MiB);
      expect({
        can_flush: exp.can_flush,
        can_fua: exp.can_fua,
        can_trim: exp.can_trim,
        can_zero: exp.can_zero,
        can_multi_conn: exp.can_multi_conn,
        is_read_only: exp.is_read_only,
      }).toEqual({
        can_flush: true,
        can_fua: true,
        can_trim: true,
        can_zero: true,
        can_multi_conn: true,
        is_read_only: false,
      });
    });

    test.skipIf(SERVER === "nbdkit")("lists the export under its store name", async () => {
      const socket = daemon.socket;
      const list = JSON.parse(await run(["nbdinfo", "--list", "--json", `nbd+unix:///?socket=${socket}`]));
      const names = (list.exports as { "export-name": string }[]).map((e) => e["export-name"]);
      expect(names).toContain("usbd");
      const usbd = list.exports.find((e: { "export-name": string }) => e["export-name"] === "usbd");
      expect(usbd["export-size"]).toBe(1024 * MiB);
    });

    test("serves the first export to a client asking for the empty name", async () => {
      const info = JSON.parse(await run(["nbdinfo", "--json", `nbd+unix:///?socket=${daemon.socket}`]));
      expect(info.exports[0]["export-size"]).toBe(1024 * MiB);
    });

    if (devType === "file") {
      test("reports a trimmed range as a hole and the written data around it as data", async () => {
        await run(["qemu-io", "-f", "raw", "-c", `write -P 0xab ${1 * MiB} ${4 * MiB}`, daemon.uri]);
        const before = await map(daemon.uri);
        expect(kindAt(before, 1 * MiB, 4 * MiB)).toEqual(["data"]);

        await run(["qemu-io", "-f", "raw", "-c", `discard ${2 * MiB} ${2 * MiB}`, daemon.uri]);
        const after = await map(daemon.uri);
        expect(kindAt(after, 2 * MiB, 2 * MiB)).toEqual(["hole"]);
        expect(kindAt(after, 1 * MiB, 1 * MiB)).toEqual(["data"]);
        expect(kindAt(after, 4 * MiB, 1 * MiB)).toEqual(["data"]);
        // The trimmed range reads back as zeroes and the data beside it survived.
        await run(["qemu-io", "-f", "raw", "-c", `read -P 0 ${2 * MiB} ${2 * MiB}`, daemon.uri]);
        await run(["qemu-io", "-f", "raw", "-c", `read -P 0xab ${1 * MiB} ${1 * MiB}`, daemon.uri]);
        await run(["qemu-io", "-f", "raw", "-c", `read -P 0xab ${4 * MiB} ${1 * MiB}`, daemon.uri]);
      });
    }
  });
}

async function map(uri: string): Promise<Extent[]> {
  return JSON.parse(await run(["nbdinfo", "--map", "--json", uri])) as Extent[];
}

/** The distinct kinds ("hole" for hole,zero; "data" otherwise) of the extents covering [offset, offset+length). */
function kindAt(extents: readonly Extent[], offset: number, length: number): string[] {
  const end = offset + length;
  const covering = extents.filter((e) => e.offset < end && e.offset + e.length > offset);
  const covered = covering.reduce((n, e) => n + Math.min(end, e.offset + e.length) - Math.max(offset, e.offset), 0);
  if (covered !== length) throw new Error(`map covers ${covered} of ${length} bytes at ${offset}: ${JSON.stringify(extents)}`);
  const kinds = covering.map((e) => ((e.type & 1) !== 0 ? "hole" : "data"));
  return [...new Set(kinds)];
}
