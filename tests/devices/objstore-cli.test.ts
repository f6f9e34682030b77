// The objstore volume through the CLI: a second daemon on a volume in use exits 2 naming the holder, and
// --objstore-takeover fences the first; `usbd-tui snapshot create|list|delete` on a stopped volume and on one a
// daemon serves (through its control socket), a snapshot
// served read-only with --objstore-snapshot (nbdinfo sees it read-only, qemu-img reads the snapshot's bytes) and a
// clone made with --objstore-clone-of.
import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { mkdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { findDaemons } from "../../src/app/control/paths.ts";
import { run, runResult, startDaemon, tempDir, removeDir, missingBinaries, type Daemon } from "../clients/helpers.ts";

setDefaultTimeout(90_000);
const ROOT = resolve(import.meta.dir, "../..");
const CLI = [join(ROOT, "node_modules/.bin/bun"), join(ROOT, "bin/usbd-tui.ts")];
const MiB = 1024 * 1024;
const missing = missingBinaries(["nbdinfo", "nbdcopy"]);

const work = tempDir("objstore-cli");
afterAll(() => removeDir(work));
const objects = join(work, "objects");
const KEY = `key:${"5e".repeat(32)}`;
const common = (volume: string) => ["--objstore-kind=local", "--objstore-cfg", JSON.stringify({ path: objects }), "--objstore-aeskey", KEY, `--store-name=${volume}`];
const machine = (name: string) => {
  const dir = join(work, name);
  mkdirSync(dir, { recursive: true });
  return dir;
};

function daemon(volume: string, dir: string, extra: readonly string[] = [], size = ""): Promise<Daemon> {
  return startDaemon({ devType: "objstore", size, storeDir: dir, storeName: volume, extraArgs: [...common(volume).filter((a) => !a.startsWith("--store-name")), "--objstore-flush-mode=remote", ...extra] });
}

/** Writes `file` into the export at `offset` with nbdcopy (which flushes at the end). */
async function put(uri: string, file: string): Promise<void> {
  await run(["nbdcopy", "--destination-is-zero", file, uri]);
}

async function get(uri: string, to: string): Promise<Uint8Array> {
  await run(["nbdcopy", uri, to]);
  return new Uint8Array(await Bun.file(to).arrayBuffer());
}

describe.skipIf(missing.length > 0)("objstore volumes from the command line", () => {
  test("a second daemon exits 2 naming the holder; --objstore-takeover takes the volume", async () => {
    const first = await daemon("two", machine("two-a"), [], "16MiB");
    try {
      const second = await runResult([...CLI, "--headless", "--dev-type=objstore", `--store-dir=${machine("two-b")}`, "--listen", `unix:${join(work, "two-b.sock")}`, ...common("two")], { timeoutMs: 30_000 });
      expect(second.exitCode).toBe(2);
      expect(second.stderr).toContain("is in use by another writer");
      expect(second.stderr).toContain(`pid ${first.proc.pid}`);
      expect(second.stderr).toContain("--objstore-takeover");
      expect(second.stderr.trim().split("\n").length).toBe(1);
      const taker = await daemon("two", machine("two-c"), ["--objstore-takeover"]);
      await taker.stop();
    } finally {
      await first.stop().catch(() => {});
    }
  });

  test("snapshot create, list and delete on a stopped volume and on a serving one; a snapshot served read-only; a clone", async () => {
    const data = join(work, "a.bin");
    const a = new Uint8Array(4 * MiB).map((_, i) => (i * 13) & 255);
    writeFileSync(data, a);
    const home = machine("snap-a");
    let d = await daemon("snapvol", home, [], "8MiB");
    await put(d.uri, data);
    await d.stop();
    const snap = (args: readonly string[]) => runResult([...CLI, "snapshot", ...args, `--store-dir=${home}`, ...common("snapvol")], { timeoutMs: 30_000 });
    const created = await snap(["create", "monday"]);
    expect(created.stderr).toBe("");
    expect(created.exitCode).toBe(0);
    expect(created.stdout).toContain("snapshot snapvol@monday created");
    expect((await snap(["create", "monday"])).exitCode).toBe(2);
    expect((await snap(["create", "../x"])).exitCode).toBe(2);
    const listed = await snap(["list"]);
    expect(listed.exitCode).toBe(0);
    expect(listed.stdout).toMatch(/^monday\t20/m);

    // Change the volume after the snapshot.
    d = await daemon("snapvol", home);
    writeFileSync(data, new Uint8Array(4 * MiB).fill(7));
    await put(d.uri, data);
    // A daemon serves the volume: the CLI asks it through its control socket, and it takes the snapshot serving on.
    const live = await snap(["create", "tuesday"]);
    expect(live.stderr).toBe("");
    expect(live.exitCode).toBe(0);
    expect(live.stdout).toContain(`snapshot snapvol@tuesday created by the serving daemon (pid ${d.proc.pid}`);
    expect((await snap(["create", "tuesday"])).exitCode).toBe(2);
    // The same through `ctl snapshot DEVICE NAME`.
    const control = findDaemons().find((x) => x.pid === d.proc.pid)!.path;
    const ctl = await runResult([...CLI, "ctl", "--control", control, "--json", "snapshot", "snapvol", "tuesday2"], { timeoutMs: 30_000 });
    expect(ctl.exitCode).toBe(0);
    expect(JSON.parse(ctl.stdout)).toMatchObject({ device: "snapvol", name: "tuesday2" });
    const notObjstore = await runResult([...CLI, "ctl", "--control", control, "snapshot", "nosuch", "x"], { timeoutMs: 30_000 });
    expect(notObjstore.exitCode).toBe(1);
    expect(notObjstore.stderr).toContain('no device named "nosuch"');
    // Written after the snapshot: not in it. The daemon kept serving throughout.
    writeFileSync(data, new Uint8Array(4 * MiB).fill(9));
    await put(d.uri, data);
    // Under another export name the CLI finds no daemon serving it, and says what to do.
    const elsewhere = await runResult([...CLI, "snapshot", "create", "wednesday", `--store-dir=${home}`, ...common("snapvol"), "--export-name=other"], { timeoutMs: 30_000 });
    expect(elsewhere.exitCode).toBe(2);
    expect(elsewhere.stderr).toContain('No daemon on this machine serves it as export "other"');
    expect(elsewhere.stderr.trim().split("\n").length).toBe(1);
    await d.stop();

    const tuesday = await daemon("snapvol", machine("snap-tue"), ["--objstore-snapshot=tuesday"]);
    try {
      const back = await get(tuesday.uri, join(work, "tue.bin"));
      expect(back.subarray(0, 4 * MiB).every((b) => b === 7)).toBe(true);
    } finally {
      await tuesday.stop();
    }

    const ro = await daemon("snapvol", machine("snap-ro"), ["--objstore-snapshot=monday"]);
    try {
      const info = JSON.parse(await run(["nbdinfo", "--json", ro.uri])) as { exports: Array<{ "is_read_only": boolean }> };
      expect(info.exports[0]!.is_read_only).toBe(true);
      const back = await get(ro.uri, join(work, "ro.bin"));
      expect(Buffer.from(back.subarray(0, 4 * MiB)).equals(Buffer.from(a))).toBe(true);
    } finally {
      await ro.stop();
    }

    const clone = await startDaemon({
      devType: "objstore",
      size: "",
      storeDir: machine("clone"),
      storeName: "snapclone",
      extraArgs: [...common("snapclone").filter((x) => !x.startsWith("--store-name")), "--objstore-clone-of=snapvol@monday", "--objstore-flush-mode=remote"],
    });
    try {
      const back = await get(clone.uri, join(work, "clone.bin"));
      expect(Buffer.from(back.subarray(0, 4 * MiB)).equals(Buffer.from(a))).toBe(true);
    } finally {
      await clone.stop();
    }
    const refused = await snap(["delete", "monday"]);
    expect(refused.exitCode).toBe(2);
    expect(refused.stderr).toContain("snapclone");
    expect((await snap(["delete", "never"])).exitCode).toBe(2);
  });
});
