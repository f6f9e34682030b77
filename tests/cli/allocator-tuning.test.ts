/**
 * The daemon runs with Bun's allocator keeping freed memory for DAEMON_PURGE_DELAY_MS before returning it
 * (src/app/allocator-tuning.ts): it re-executes itself once with the setting, keeping its pid, unless the operator
 * set a value of their own. That the memory does go back is tested under load in tests/robustness/fuzz.robust.ts.
 */
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { DAEMON_PURGE_DELAY_MS, PURGE_DELAY_VARIABLE, restartPlan } from "../../src/app/allocator-tuning.ts";
import { startDaemon, stopAndRemove, tempDir } from "../clients/helpers.ts";

const base = { execPath: "/opt/bun", execArgv: ["--smol"], platform: "linux", env: { HOME: "/root" } };

describe("restartPlan", () => {
  test("a script is started again with the same bun flags, script and arguments, and the variable set", () => {
    const plan = restartPlan({ ...base, argv: ["bun", "/x/bin/usbd-tui.ts", "--headless", "--dev-type=mem"] });
    expect(plan?.argv).toEqual(["/opt/bun", "--smol", "/x/bin/usbd-tui.ts", "--headless", "--dev-type=mem"]);
    expect(plan?.env).toEqual({ HOME: "/root", [PURGE_DELAY_VARIABLE]: DAEMON_PURGE_DELAY_MS });
  });
  test("a compiled binary is started as itself, without its embedded script path", () => {
    const plan = restartPlan({ ...base, execPath: "/usr/local/bin/usbd-tui", execArgv: [], argv: ["bun", "/$bunfs/root/usbd-tui", "--headless"] });
    expect(plan?.argv).toEqual(["/usr/local/bin/usbd-tui", "--headless"]);
  });
  test("not when the operator set the variable, for short commands, or off Linux", () => {
    expect(restartPlan({ ...base, env: { [PURGE_DELAY_VARIABLE]: "100" }, argv: ["bun", "s.ts", "--headless"] })).toBeUndefined();
    expect(restartPlan({ ...base, argv: ["bun", "s.ts", "--help"] })).toBeUndefined();
    expect(restartPlan({ ...base, argv: ["bun", "s.ts", "ctl", "stats"] })).toBeUndefined();
    expect(restartPlan({ ...base, platform: "darwin", argv: ["bun", "s.ts", "--headless"] })).toBeUndefined();
  });
});

function environOf(pid: number): Map<string, string> {
  const entries = readFileSync(`/proc/${pid}/environ`, "utf8").split("\0").filter((e) => e.includes("="));
  return new Map(entries.map((e) => [e.slice(0, e.indexOf("=")), e.slice(e.indexOf("=") + 1)]));
}

describe("the daemon", () => {
  test("serves from the same pid with the variable set, and keeps an operator's own value", async () => {
    for (const [given, expected] of [[undefined, DAEMON_PURGE_DELAY_MS], ["250", "250"]] as const) {
      const dir = tempDir("alloc");
      // The daemon inherits this process's environment.
      if (given === undefined) delete process.env[PURGE_DELAY_VARIABLE];
      else process.env[PURGE_DELAY_VARIABLE] = given;
      const daemon = await startDaemon({ devType: "mem", size: "64MiB", storeDir: dir, storeName: "disk" }).finally(() => {
        delete process.env[PURGE_DELAY_VARIABLE];
      });
      expect(environOf(daemon.proc.pid).get(PURGE_DELAY_VARIABLE)).toBe(expected);
      await stopAndRemove(daemon, dir);
    }
  });
});
