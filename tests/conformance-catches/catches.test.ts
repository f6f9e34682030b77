/**
 * The conformance suite catches what it promises to: each deliberately broken device fails the checks for the rule
 * it breaks (run in a child `bun test`, since a failing suite must not fail this run), and a correct device without
 * the optional calls passes with those checks reported as skipped, not passed.
 */
import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { join, resolve } from "node:path";

setDefaultTimeout(60_000);

const ROOT = resolve(import.meta.dir, "../..");

async function runSuite(device: string): Promise<{ exit: number; failed: string[]; pass: number; skip: number }> {
  const proc = Bun.spawn([join(ROOT, "node_modules/.bin/bun"), "test", "./tests/conformance-catches/suite.fixture.ts"], {
    cwd: ROOT,
    env: { ...process.env, BROKEN_DEVICE: device },
    stdout: "pipe",
    stderr: "pipe",
  });
  const [out, err, exit] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  const text = out + err;
  const count = (word: string) => Number(new RegExp(`^\\s*(\\d+) ${word}$`, "m").exec(text)?.[1] ?? 0);
  const failed = [...text.matchAll(/^\(fail\) (.*?)(?: \[[\d.]+m?s\])?$/gm)].map((m) => m[1]!);
  return { exit, failed, pass: count("pass"), skip: count("skip") };
}

/** Whether some failed check's name contains `part`. */
function caught(failed: readonly string[], part: string): boolean {
  return failed.some((name) => name.includes(part));
}

describe("the conformance suite", () => {
  test("fails a device whose small writes replace their whole block (the Go original's bug)", async () => {
    const r = await runSuite("block-replacer");
    expect(r.exit).not.toBe(0);
    expect(caught(r.failed, "1 and 3 bytes at odd offsets inside blocks keep the neighbours")).toBe(true);
  });

  test("fails a device whose trim clears bytes past its range", async () => {
    const r = await runSuite("trim-spills");
    expect(r.exit).not.toBe(0);
    expect(caught(r.failed, "leaves zeros or the old data inside, and the neighbours untouched")).toBe(true);
  });

  test("fails a device that answers a read past the end with fewer bytes instead of EINVAL", async () => {
    const r = await runSuite("short-reads");
    expect(r.exit).not.toBe(0);
    expect(caught(r.failed, "out-of-range calls fail with EINVAL, never a short read > reads")).toBe(true);
  });

  test("fails a device whose writes tear (a concurrent read or write sees one half done)", async () => {
    const r = await runSuite("tearing");
    expect(r.exit).not.toBe(0);
    expect(caught(r.failed, "a read while an overlapping write runs returns all old or all new bytes")).toBe(true);
    expect(caught(r.failed, "overlapping writes in flight together each land whole")).toBe(true);
  });

  test("fails a device that claims read-only, persistence and fast zeroing it does not have", async () => {
    const r = await runSuite("lying");
    expect(r.exit).not.toBe(0);
    expect(caught(r.failed, "read-only: every write, trim and zeroing is refused with EPERM")).toBe(true);
    expect(caught(r.failed, "persistent: the suite was given a way to reopen the store")).toBe(true);
    expect(caught(r.failed, "fast zero: the device has a writeZeroes to zero with")).toBe(true);
  });

  test("passes a correct device without the optional calls, reporting their checks as skipped", async () => {
    const r = await runSuite("minimal");
    expect(r.failed).toEqual([]);
    expect(r.exit).toBe(0);
    expect(r.pass).toBeGreaterThan(15);
    // writeZeroes (3), extents (4), reclaim (1), reopen (1), and the claims the device does not make.
    expect(r.skip).toBeGreaterThanOrEqual(9);
  });
});
