// The systemd unit template the package ships: systemd-analyze finds nothing wrong with it, and its ExecStart is
// a command line the daemon accepts (so the template cannot rot as flags change).
import { describe, expect, test } from "bun:test";
import { copyFileSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseFlags } from "../../src/cli/flags.ts";
import { removeDir, runResult, skipReason, tempDir } from "../clients/helpers.ts";

const UNIT = resolve(import.meta.dir, "../../systemd/usbd-tui@.service");
const text = readFileSync(UNIT, "utf8");
const setting = (key: string) => [...text.matchAll(new RegExp(`^${key}=(.*)$`, "gm"))].map((m) => m[1]!);

describe("systemd/usbd-tui@.service", () => {
  test("Type=notify, a safe stop (SIGTERM to the daemon, a long timeout), ordered before remote file systems", () => {
    expect(setting("Type")).toEqual(["notify"]);
    expect(setting("KillSignal")).toEqual(["SIGTERM"]);
    expect(setting("KillMode")).toEqual(["mixed"]);
    expect(Number(setting("TimeoutStopSec")[0])).toBeGreaterThanOrEqual(120);
    expect(setting("Before")).toContain("remote-fs-pre.target");
    expect(setting("RestartPreventExitStatus")).toEqual(["2"]);
  });

  test("ExecStart is a command line the daemon accepts: a config file per instance, the control socket and pid file in /run", () => {
    const [exec] = setting("ExecStart");
    const words = exec!.replaceAll("%i", "vm1").split(/\s+/);
    expect(words[0]).toBe("/usr/local/bin/usbd-tui");
    const options = parseFlags(words.slice(1));
    expect(options.headless).toBe(true);
    expect(options.config).toBe("/etc/usbd-tui/vm1.toml");
    expect(options.control).toBe("/run/usbd-tui/vm1.sock");
    expect(options.pidFile).toBe("/run/usbd-tui/vm1.pid");
  });

  test("systemd-analyze verify finds nothing but the binary not being installed on this machine", async () => {
    if (skipReason("unit file", ["systemd-analyze"]) !== undefined) return;
    const dir = tempDir("unit");
    try {
      const instance = join(dir, "usbd-tui@vm1.service");
      copyFileSync(UNIT, instance);
      const r = await runResult(["systemd-analyze", "verify", instance]);
      const complaints = `${r.stdout}${r.stderr}`.split("\n").filter((l) => l.trim() !== "" && !l.includes("/usr/local/bin/usbd-tui is not executable"));
      expect(complaints).toEqual([]);
    } finally {
      removeDir(dir);
    }
  });
});
