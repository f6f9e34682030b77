// `usbd-tui --config FILE` as users run it: two devices from one file become two exports of one socket that real
// clients list, write and read back independently; SIGTERM exits 0 and removes the socket. Mistakes in the file
// exit 2 naming the key; a device that fails to open exits 1 naming the device.
import { afterAll, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { removeDir, run, runResult, skipReason, tempDir } from "../clients/helpers.ts";
import { waitFor, watch } from "../helpers/process.ts";

const ROOT = resolve(import.meta.dir, "../..");
const CLI = [join(ROOT, "node_modules/.bin/bun"), join(ROOT, "bin/usbd-tui.ts")];
const MiB = 1024 * 1024;

const dirs: string[] = [];
function dir(prefix: string): string {
  const d = tempDir(prefix);
  dirs.push(d);
  return d;
}
afterAll(() => {
  for (const d of dirs) removeDir(d);
});

const skip = skipReason("config CLI", ["nbdinfo", "nbdcopy", "qemu-io"]) !== undefined;

describe("usbd-tui --config with two mem devices on one socket", () => {
  test.skipIf(skip)("both exports are listed with their sizes, each keeps its own data, SIGTERM exits 0 and removes the socket", async () => {
    const d = dir("cfg");
    const socket = join(d, "s.sock");
    const config = join(d, "usbd.toml");
    writeFileSync(
      config,
      [`listen = "unix:${socket}"`, "", "[[device]]", 'name = "alpha"', 'store-size = "64MiB"', "", "[[device]]", 'name = "beta"', `store-size = ${32 * MiB}`, ""].join("\n"),
    );
    const w = watch([...CLI, "--config", config, "--headless"], { cwd: ROOT });
    try {
      await waitFor("two URI lines and the socket", w, () => ((w.stdout().match(/URI:/g) ?? []).length === 2 && existsSync(socket) ? true : undefined), 20_000);
      const base = `nbd+unix:///?socket=${socket}`;
      const listed = JSON.parse(await run(["nbdinfo", "--list", "--json", base])) as { exports: { "export-name": string; "export-size": number }[] };
      expect(listed.exports.map((e) => [e["export-name"], e["export-size"]])).toEqual([
        ["alpha", 64 * MiB],
        ["beta", 32 * MiB],
      ]);

      // alpha first: its own writes read back.
      const alpha = `nbd+unix:///alpha?socket=${socket}`;
      await run(["qemu-io", "-f", "raw", alpha, "-c", "write -P 0x5a 0 2M", "-c", "read -P 0x5a 0 2M"]);
      // 2 MiB of random data into beta with nbdcopy, then all of beta back out: the data, then zeros (nothing of alpha's).
      const input = join(d, "in.bin");
      const output = join(d, "out.bin");
      writeFileSync(input, randomBytes(2 * MiB));
      const beta = `nbd+unix:///beta?socket=${socket}`;
      await run(["nbdcopy", input, beta]);
      await run(["nbdcopy", beta, output]);
      const back = readFileSync(output);
      expect(back.length).toBe(32 * MiB);
      expect(Buffer.compare(back.subarray(0, 2 * MiB), readFileSync(input))).toBe(0);
      expect(back.subarray(2 * MiB).every((b) => b === 0)).toBe(true);
      // alpha still holds its own pattern, not beta's data.
      await run(["qemu-io", "-f", "raw", alpha, "-c", "read -P 0x5a 0 2M", "-c", "read -P 0 2M 2M"]);

      expect(await w.stop("SIGTERM", 20_000)).toBe(0);
      expect(existsSync(socket)).toBe(false);
      expect(w.stderr()).toContain("stopped cleanly");
    } finally {
      w.kill();
    }
  });
});

describe("mistakes and failures", () => {
  test("a misspelt key exits 2 with one line naming the file, the device and the key", async () => {
    const d = dir("cfg-bad");
    const config = join(d, "usbd.toml");
    writeFileSync(config, `listen = "unix:${join(d, "s.sock")}"\n[[device]]\nname = "alpha"\nstore_size = "64MiB"\n`);
    const r = await runResult([...CLI, "--config", config]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toBe(`usbd-tui: ${config}: device "alpha": unknown key "store_size" (did you mean store-size?)\n`);
    expect(existsSync(join(d, "s.sock"))).toBe(false);
  });

  test("a missing file, a syntax error and --export-name next to --config exit 2", async () => {
    const d = dir("cfg-usage");
    const config = join(d, "usbd.toml");
    expect(await runResult([...CLI, "--config", config])).toMatchObject({ exitCode: 2, stderr: `usbd-tui: --config ${config}: no such file\n` });
    writeFileSync(config, '[[device]]\nname = "a"\nstore-size = \n');
    const syntax = await runResult([...CLI, "--config", config]);
    expect(syntax.exitCode).toBe(2);
    expect(syntax.stderr).toStartWith(`usbd-tui: ${config}:3: TOML syntax error: Missing value after '='`);
    writeFileSync(config, `listen = "unix:${join(d, "s.sock")}"\n[[device]]\nname = "a"\n`);
    const r = await runResult([...CLI, "--config", config, "--export-name", "x"]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain("--export-name on the command line does not go with --config");
    const t = await runResult([...CLI, "--config", config, "--listen", "tcp:127.0.0.1:0", "--dev-type=tape"]);
    expect(t.exitCode).toBe(2);
    expect(t.stderr).toContain(`${config}: unknown device type "tape"`);
  });

  test("when the second device cannot open, exit 1 naming it, and nothing is left listening", async () => {
    const d = dir("cfg-fail");
    const socket = join(d, "s.sock");
    writeFileSync(join(d, "b.img"), new Uint8Array(MiB));
    const config = join(d, "usbd.toml");
    writeFileSync(
      config,
      `listen = "unix:${socket}"\nstore-dir = "${d}"\n[[device]]\nname = "a"\ndev-type = "file"\nstore-size = "4MiB"\n[[device]]\nname = "b"\ndev-type = "file"\nstore-size = "2MiB"\n`,
    );
    const r = await runResult([...CLI, "--config", config]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(/device "b": .*refusing to resize/);
    expect(existsSync(socket)).toBe(false);
    expect(readFileSync(join(d, "b.img")).length).toBe(MiB);
  });
});
