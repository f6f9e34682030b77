// --run CMD, as nbdkit has it: the command gets $uri (a private socket when there is no --listen), the daemon shuts
// down in the safe order when it exits and exits with its status; a signal goes to the command first.
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { removeDir, run, runResult, skipReason, tempDir } from "../clients/helpers.ts";
import { waitFor, watch } from "../helpers/process.ts";

const ROOT = resolve(import.meta.dir, "../..");
const CLI = [join(ROOT, "node_modules/.bin/bun"), join(ROOT, "bin/usbd-tui.ts")];
const skip = skipReason("--run", ["qemu-img", "nbdinfo"]);
const dir = tempDir("run");
afterAll(() => removeDir(dir));

describe.skipIf(skip !== undefined)("--run CMD", () => {
  test("the command reaches the device at $uri (a private socket, gone afterwards) and its status is the exit code", async () => {
    const r = await runResult([...CLI, "--store-size=64MiB", "--control", "none", "--run", 'echo "$uri"; nbdinfo --size "$uri"; exit 7']);
    expect(r.exitCode, r.stderr).toBe(7);
    const [uri, size] = r.stdout.trim().split("\n");
    expect(uri).toMatch(/^nbd\+unix:\/\/\/usbd\?socket=\/.*usbd-tui-run-.*\/nbd\.sock$/);
    expect(size).toBe(String(64 * 1024 * 1024));
    expect(existsSync(uri!.slice(uri!.indexOf("socket=") + 7))).toBe(false);
    // Quiet by default: no info lines around the command's own output.
    expect(r.stderr).toBe("");
  });

  test("qemu-img convert into a dedup store, then a second run compares it: the first run's shutdown flushed everything", async () => {
    const qcow = join(dir, "disk.qcow2");
    await run(["qemu-img", "create", "-q", "-f", "qcow2", qcow, "64M"]);
    await run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x3c 1M 3M", "-c", "write -P 0x7e 40M 512k", qcow]);
    const store = ["--dev-type=dedup", `--store-dir=${join(dir, "store")}`, "--store-name=disk", "--control", "none"];
    const convert = await runResult([...CLI, ...store, "--store-size=64MiB", "--run", `qemu-img convert -n -f qcow2 -O raw ${qcow} "$uri"`]);
    expect(convert.exitCode, convert.stderr).toBe(0);
    const compare = await runResult([...CLI, ...store, "--run", `qemu-img compare -f qcow2 -F raw ${qcow} "$uri"`]);
    expect(compare.exitCode, compare.stderr).toBe(0);
    expect(compare.stdout).toContain("Images are identical.");
  });

  test("with --listen and several devices: $uri is the first, $uri_NAME each", async () => {
    const config = join(dir, "two.toml");
    writeFileSync(config, `[[device]]\nname = "a"\nstore-size = "8MiB"\n[[device]]\nname = "b-2"\nstore-size = "4MiB"\n`);
    const r = await runResult([...CLI, "--listen", `unix:${join(dir, "two.sock")}`, "--config", config, "--control", "none", "--run", 'nbdinfo --size "$uri_a"; nbdinfo --size "$uri_b_2"; [ "$uri" = "$uri_a" ]']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout.trim().split("\n")).toEqual([String(8 * 1024 * 1024), String(4 * 1024 * 1024)]);
  });

  test("SIGTERM goes to the command; the daemon stops once it has exited, with its status (143)", async () => {
    const marker = join(dir, "started");
    const w = watch([...CLI, "--store-size=8MiB", "--control", "none", "--run", `trap 'echo got-term; exit 143' TERM; touch ${marker}; while :; do sleep 0.1; done`]);
    await waitFor("the command to start", w, () => (existsSync(marker) ? true : undefined), 20_000);
    expect(await w.stop("SIGTERM", 20_000)).toBe(143);
    expect(w.stdout()).toContain("got-term");
  });
});
