// `usbd-tui check` as users run it on a stopped dedup store: its messages and exit codes (0 consistent or
// repaired, 1 unreadable store, 2 usage error, 3 problems left).
import { Database } from "bun:sqlite";
import { afterAll, describe, expect, test } from "bun:test";
import { readdirSync, readlinkSync } from "node:fs";
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

describe("usbd-tui check shows how far it is", () => {
  test("a bar redrawn in place on a terminal; lines every few seconds, and at each phase's end, otherwise", async () => {
    const { checkProgress, progressText } = await import("../../src/cli/check-progress.ts");
    expect(progressText({ phase: "blocks", done: 1_200_000, total: 2_400_000 }, 80)).toBe(`reading and hashing blocks ${"█".repeat(12)}${"░".repeat(12)} 50% (1,200,000 of 2,400,000)`);
    let clock = 0;
    const written: string[] = [];
    const tty = checkProgress({ isTTY: true, columns: 100, write: (t) => written.push(t) }, () => clock);
    for (let done = 0; done <= 10_000; done += 1000) {
      clock += 50;
      tty.onProgress({ phase: "blocks", done, total: 10_000 });
    }
    tty.done();
    expect(written.every((w) => w.startsWith("\r\u001B[K"))).toBe(true);
    expect(written.length).toBeLessThan(11);
    expect(written.at(-2)).toContain("100% (10,000 of 10,000)");
    const lines: string[] = [];
    clock = 0;
    const log = checkProgress({ isTTY: false, columns: 80, write: (t) => lines.push(t) }, () => clock);
    for (let done = 0; done <= 100; done++) {
      clock += 1000;
      log.onProgress({ phase: "blocks", done, total: 100 });
    }
    log.onProgress({ phase: "map", done: 3, total: 3 });
    // Every 5 s (20 lines over 100 s), then each phase's end.
    expect(lines.length).toBe(22);
    expect(lines.every((l) => l.startsWith("usbd-tui check: ") && l.endsWith("\n"))).toBe(true);
    expect(lines.at(-1)).toContain("checking the map");
    // A quick check says nothing.
    const quiet: string[] = [];
    const fast = checkProgress({ isTTY: false, columns: 80, write: (t) => quiet.push(t) }, () => 0);
    fast.onProgress({ phase: "blocks", done: 5, total: 5 });
    fast.onProgress({ phase: "map", done: 1, total: 1 });
    expect(quiet).toEqual([]);
  });

  test("a store of more than 4096 blocks reports progress on its way (the real check, its output on stderr)", async () => {
    const { checkDedupStore } = await import("../../src/devices/dedup/check.ts");
    const dev = openDedupDevice({ storeDir: dir, storeName: "big", size: 64 * 1024 * 1024, compression: "none" });
    const data = new Uint8Array(20 * 1024 * 1024);
    for (let i = 0; i < data.length; i += 65536) crypto.getRandomValues(data.subarray(i, i + 65536));
    dev.write(0, data);
    dev.flush();
    dev.close();
    const seen: string[] = [];
    const report = checkDedupStore({ storeDir: dir, storeName: "big", onProgress: (p) => seen.push(`${p.phase} ${p.done}/${p.total}`) });
    expect(report.blocks).toBe(5120);
    expect(seen).toContain("blocks 4096/5120");
    expect(seen).toContain("blocks 5120/5120");
    expect(seen.at(-1)).toMatch(/^map (\d+)\/\1$/);
  });

  test("through the CLI, not on a terminal: a long check writes progress lines to stderr, stdout keeps only the verdict", async () => {
    // 3 x 4096 unique blocks: the check reports at 4,096, 8,192 and 12,288 blocks, then at the map's end.
    const dev = openDedupDevice({ storeDir: dir, storeName: "long", size: 64 * 1024 * 1024, compression: "none" });
    const data = new Uint8Array(48 * 1024 * 1024);
    for (let i = 0; i < data.length; i += 65536) crypto.getRandomValues(data.subarray(i, i + 65536));
    dev.write(0, data);
    dev.flush();
    dev.close();
    const verdict = `dedup store ${dir}/long: consistent (12288 blocks, 12288 references)`;
    // Unheld it takes well under the 5 s between lines: nothing but the verdict.
    const quick = await check("--store-name=long");
    expect([quick.exitCode, quick.stdout.trim(), quick.stderr]).toEqual([0, verdict, ""]);

    // Made to take longer than 5 s, as a large store does: held (SIGSTOP) for 5.5 s once it has the store open.
    const proc = Bun.spawn([...CLI, "check", "--dev-type=dedup", `--store-dir=${dir}`, "--store-name=long"], { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
    const output = Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
    const hasStoreOpen = () => {
      try {
        return readdirSync(`/proc/${proc.pid}/fd`).some((fd) => readlinkSync(`/proc/${proc.pid}/fd/${fd}`).endsWith("/long.dedup.blocks"));
      } catch {
        return false;
      }
    };
    const deadline = Date.now() + 10_000;
    while (!hasStoreOpen() && proc.exitCode === null && Date.now() < deadline) await Bun.sleep(1);
    proc.kill("SIGSTOP");
    await Bun.sleep(5500);
    proc.kill("SIGCONT");
    const [stdout, stderr, code] = await output;
    expect(code, stderr).toBe(0);
    expect(stdout.trim()).toBe(verdict);
    // Plain lines (no bar redrawn in place), each saying something new: where the blocks phase is, its end, the map's end.
    expect(stderr).not.toMatch(/[\r\u001B]/);
    const lines = stderr.trimEnd().split("\n");
    expect(lines.length).toBeGreaterThanOrEqual(2);
    expect(lines.every((l) => /^usbd-tui check: (reading and hashing blocks|checking the map) [█░]+ \d+% \([\d,]+ of [\d,]+\)$/.test(l))).toBe(true);
    expect(new Set(lines).size).toBe(lines.length);
    expect(lines.filter((l) => l.endsWith("100% (12,288 of 12,288)"))).toHaveLength(1);
    expect(lines.at(-1)).toMatch(/^usbd-tui check: checking the map [█░]+ 100% \((\d+) of \1\)$/);
  }, 20_000);
});
