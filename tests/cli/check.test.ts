// `usbd-tui check` as users run it on a stopped dedup store: its messages and exit codes (0 consistent or
// repaired, 1 unreadable store, 2 usage error, 3 problems left).
import { Database } from "bun:sqlite";
import { afterAll, describe, expect, test } from "bun:test";
import { join, resolve } from "node:path";
import { openDedupDevice } from "../../src/devices/dedup/index.ts";
import { removeDir, runResult, tempDir } from "../clients/helpers.ts";

const ROOT = resolve(import.meta.dir, "../..");
const CLI = [join(ROOT, "node_modules/.bin/bun"), join(ROOT, "bin/usbd-tui.ts")];
const dir = tempDir("usbd-check-");
afterAll(() => removeDir(dir));

const check = (...args: string[]) => runResult([...CLI, "check", "--dev-type=dedup", `--store-dir=${dir}`, ...args]);

describe("usbd-tui check", () => {
  test("a consistent store: exit 0 and one line with the totals", async () => {
    const dev = openDedupDevice({ storeDir: dir, storeName: "good", size: 16 * 1024 * 1024 });
    dev.write(0, new Uint8Array(8192).fill(7));
    dev.close();
    const r = await check("--store-name=good");
    expect(r.exitCode).toBe(0);
    expect(r.stdout.trim()).toBe(`dedup store ${dir}/good: consistent (1 blocks, 2 references)`);
  });

  test("problems: exit 3 naming --repair; --repair fixes them (exit 0); --json reports the same", async () => {
    const dev = openDedupDevice({ storeDir: dir, storeName: "bad", size: 16 * 1024 * 1024 });
    dev.write(0, new Uint8Array(8192).fill(7));
    dev.close();
    const db = new Database(join(dir, "bad.dedup.db"));
    db.exec("UPDATE blocks SET refs = 9");
    db.close();
    const found = await check("--store-name=bad");
    expect(found.exitCode).toBe(3);
    expect(found.stdout).toContain("refcount 9 but 2 references");
    expect(found.stdout).toContain("run again with --repair");
    const json = await check("--store-name=bad", "--json");
    expect(JSON.parse(json.stdout)).toMatchObject({ type: "check", problemCount: 1, repaired: false, blocks: 1, references: 2 });
    const fixed = await check("--store-name=bad", "--repair");
    expect(fixed.exitCode).toBe(0);
    expect(fixed.stdout).toContain("repaired 1 problems");
    expect((await check("--store-name=bad")).exitCode).toBe(0);
  });

  test("a missing store exits 1; a store in use is refused; other kinds and --repair outside check are usage errors", async () => {
    const missing = await check("--store-name=nothing-here");
    expect(missing.exitCode).toBe(1);
    expect(missing.stderr).toContain("does not exist; is --store-dir/--store-name right?");
    const dev = openDedupDevice({ storeDir: dir, storeName: "busy", size: 16 * 1024 * 1024 });
    const busy = await check("--store-name=busy");
    dev.close();
    expect(busy.exitCode).toBe(1);
    expect(busy.stderr).toContain("locked by another process");
    const file = await runResult([...CLI, "check", "--dev-type=file", `--store-dir=${dir}`]);
    expect(file.exitCode).toBe(2);
    expect(file.stderr).toContain("pass --dev-type=dedup");
    const stray = await runResult([...CLI, "--repair", "--listen", `unix:${join(dir, "x.sock")}`]);
    expect(stray.exitCode).toBe(2);
    expect(stray.stderr).toContain("--repair only applies to usbd-tui check");
  });
});
