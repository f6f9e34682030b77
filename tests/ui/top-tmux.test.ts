/**
 * `usbd-tui top` in a real terminal: tmux runs the viewer against a headless daemon's control socket while fio
 * writes to it; the panel shows the live IOPS, f flushes the daemon's device, and q leaves the viewer while the
 * daemon keeps serving.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { type Daemon, removeDir, runResult, skipReason, startDaemon, tempDir } from "../clients/helpers.ts";
import { flushesOf, iopsOf, panelOf } from "./screen.ts";
import { type TmuxScreen, tmuxScreen } from "./tmux.ts";

const ROOT = resolve(import.meta.dir, "../..");
const CLI = [join(ROOT, "node_modules/.bin/bun"), join(ROOT, "bin/usbd-tui.ts")];
const skip = skipReason("top in tmux", ["tmux", "fio"]);

describe.skipIf(skip !== undefined)("usbd-tui top attached to a running daemon", () => {
  let dir: string;
  let control: string;
  let daemon: Daemon;
  let driver: TmuxScreen;

  beforeAll(async () => {
    dir = tempDir("top");
    control = join(dir, "c.sock");
    daemon = await startDaemon({ devType: "mem", size: "256MiB", exportName: "busy", extraArgs: ["--control", control] });
    driver = tmuxScreen(join(dir, "tmux.sock"), "top", "top", 200);
    const command = `env -u CI ${CLI.join(" ")} top --control ${control}; echo "exit=$?" > ${join(dir, "exit")}; sleep 60`;
    expect((await driver.tmux("new-session", "-d", "-s", "top", "-x", "80", "-y", "24", command)).exitCode).toBe(0);
  }, 30_000);

  afterAll(async () => {
    await driver?.tmux("kill-server").catch(() => undefined);
    daemon?.kill();
    removeDir(dir);
  });

  test("the viewer shows the daemon's device, and live IOPS under fio", async () => {
    const fio = Bun.spawn(
      ["fio", "--name=top", "--ioengine=nbd", `--uri=${daemon.uri}`, "--rw=randwrite", "--bs=4k", "--iodepth=4", "--size=64M", "--time_based", "--runtime=6"],
      { stdout: "ignore", stderr: "pipe" },
    );
    const text = await driver.screenWhere("write IOPS in the viewer", (t) => iopsOf(panelOf(t, "busy"), "W") > 0, 20_000);
    driver.keep("fio", text);
    expect(text.split("\n")[0]).toContain(`viewing pid ${daemon.proc.pid}`);
    expect(text).toContain("q  leave");
    expect(await fio.exited).toBe(0);
  }, 30_000);

  test("f flushes the daemon's device: its counter moves and the event shows in the viewer", async () => {
    const before = flushesOf(panelOf(await driver.screen(), "busy"));
    await driver.tmux("send-keys", "-t", "top", "f");
    const text = await driver.screenWhere("the flush", (t) => /busy\s+flush done in/.test(t) && flushesOf(panelOf(t, "busy")) > before, 15_000);
    driver.keep("flush", text);
  }, 30_000);

  test("q leaves the viewer at once (exit 0), and the daemon keeps serving", async () => {
    await driver.tmux("send-keys", "-t", "top", "q");
    const exitFile = join(dir, "exit");
    const deadline = Date.now() + 10_000;
    while (!existsSync(exitFile) && Date.now() < deadline) await Bun.sleep(100);
    expect(readFileSync(exitFile, "utf8").trim()).toBe("exit=0");
    expect(daemon.proc.exitCode).toBeNull();
    const status = await runResult([...CLI, "ctl", "--control", control, "status"]);
    expect(status.exitCode, status.stderr).toBe(0);
    expect(status.stdout).toMatch(/busy: mem, 256 MiB, serving/);
    await daemon.stop();
  }, 30_000);
});
