/**
 * The dashboard in a real terminal: tmux runs `usbd-tui --config` (two mem devices on a Unix socket), fio writes to
 * one of them through its nbd engine, and `tmux capture-pane` reads the screen as a user sees it. Keys go in with
 * `tmux send-keys`. The last screens are kept under .artifacts/ (dashboard-*.txt) as the test's artifact.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import type { Subprocess } from "bun";
import { removeDir, skipReason, tempDir } from "../clients/helpers.ts";
import { flushesOf, iopsOf, panelOf } from "./screen.ts";
import { type TmuxScreen, tmuxScreen } from "./tmux.ts";

const ROOT = resolve(import.meta.dir, "../..");
const BUN = join(ROOT, "node_modules/.bin/bun");
const CLI = join(ROOT, "bin/usbd-tui.ts");
const skip = skipReason("dashboard in tmux", ["tmux", "fio"]);

describe.skipIf(skip !== undefined)("the dashboard in tmux", () => {
  let dir: string;
  let socket: string;
  let fio: Subprocess | undefined;

  // Set in beforeAll, once the temporary directory (and with it the tmux socket) exists.
  let driver: TmuxScreen;
  const tmux = (...args: string[]) => driver.tmux(...args);
  const screen = () => driver.screen();
  const keep = (name: string, text: string) => driver.keep(name, text);
  const screenWhere = (what: string, predicate: (text: string) => boolean, timeoutMs = 15_000) => driver.screenWhere(what, predicate, timeoutMs);

  beforeAll(async () => {
    dir = tempDir("tmux-ui");
    socket = join(dir, "nbd.sock");
    driver = tmuxScreen(join(dir, "tmux.sock"), "usbd", "dashboard", 200);
    const config = join(dir, "usbd.toml");
    writeFileSync(
      config,
      `[[device]]\nname = "busy"\nstore-size = "256MiB"\n\n[[device]]\nname = "idle"\nstore-size = "64MiB"\n`,
    );
    // The exit status lands in a file: tmux itself does not report it.
    // Without CI in the environment: chalk turns colour off under CI=true, and the colour checks below need it on.
    const command = `env -u CI ${BUN} ${CLI} --listen unix:${socket} --config ${config}; echo "exit=$?" > ${join(dir, "exit")}; sleep 60`;
    const started = await tmux("new-session", "-d", "-s", "usbd", "-x", "100", "-y", "34", command);
    expect(started.exitCode).toBe(0);
  }, 15_000);

  afterAll(async () => {
    fio?.kill("SIGKILL");
    await tmux("kill-server").catch(() => undefined);
    removeDir(dir);
  });

  test("both devices appear, serving on the socket", async () => {
    const text = await screenWhere("both panels serving", (t) => panelOf(t, "busy").includes("serving") && panelOf(t, "idle").includes("serving"));
    expect(text.split("\n")[0]).toContain("2 devices");
    expect(text.split("\n")[0]).toContain("network export");
    expect(text).toContain("f  flush");
    expect(existsSync(socket)).toBe(true);
    // In colour (the selected panel's border, the header), since NO_COLOR is not set here.
    const coloured = (await tmux("capture-pane", "-e", "-p", "-t", "usbd")).stdout;
    expect(coloured).toMatch(/\u001B\[(3[0-7]|9[0-7]|38;)/);
  }, 30_000);

  test("NO_COLOR: the same screen without a single colour", async () => {
    const command = `env -u CI NO_COLOR=1 ${BUN} ${CLI} --listen unix:${join(dir, "plain.sock")} --store-size 8MiB; sleep 60`;
    expect((await tmux("new-session", "-d", "-s", "plain", "-x", "100", "-y", "30", command)).exitCode).toBe(0);
    try {
      const deadline = Date.now() + 15_000;
      let text = "";
      while (!text.includes("serving") && Date.now() < deadline) {
        await Bun.sleep(200);
        text = (await tmux("capture-pane", "-e", "-p", "-t", "plain")).stdout;
      }
      expect(text).toContain("usbd · mem · 8 MiB · serving");
      expect(text).not.toMatch(/\u001B\[(3[0-7]|9[0-7]|38;|4[0-7]|48;)/);
    } finally {
      await tmux("send-keys", "-t", "plain", "q", "y");
      await Bun.sleep(500);
      await tmux("kill-session", "-t", "plain");
    }
  }, 30_000);

  test("fio on one device: non-zero IOPS on it, zero on the other", async () => {
    fio = Bun.spawn(
      ["fio", "--name=busy", "--ioengine=nbd", `--uri=nbd+unix:///busy?socket=${socket}`, "--rw=randwrite", "--bs=4k", "--iodepth=4", "--size=64M", "--time_based", "--runtime=6"],
      { stdout: "pipe", stderr: "pipe" },
    );
    const text = await screenWhere("write IOPS on busy", (t) => iopsOf(panelOf(t, "busy"), "W") > 0);
    keep("fio", text);
    expect(iopsOf(panelOf(text, "idle"), "W")).toBe(0);
    expect(await fio.exited).toBe(0);
    fio = undefined;
  }, 30_000);

  test("at 80x24 (resized while running) every panel, the events and the keys still fit", async () => {
    await tmux("resize-window", "-t", "usbd", "-x", "80", "-y", "24");
    const text = await screenWhere("the 80x24 layout", (t) => t.split("\n")[0]!.length <= 80 && t.includes("busy · mem") && t.includes("idle · mem") && t.includes(" q  quit"));
    keep("80x24", text);
    const lines = text.replace(/\n+$/, "").split("\n");
    expect(lines.length).toBeLessThanOrEqual(24);
    expect(Math.max(...lines.map((l) => l.length))).toBeLessThanOrEqual(80);
    expect(text).toContain("events (");
  }, 30_000);

  test("f flushes the selected device: its flush counter moves and the event pane reports it", async () => {
    const before = flushesOf(panelOf(await screen(), "busy"));
    await tmux("send-keys", "-t", "usbd", "f");
    const text = await screenWhere("the flush event", (t) => /busy\s+flush done in [0-9.]+ (ms|s)/.test(t) && flushesOf(panelOf(t, "busy")) > before);
    keep("flush", text);
  }, 30_000);

  test("d on the other device asks, then detaches it", async () => {
    await tmux("send-keys", "-t", "usbd", "Down");
    await screenWhere("idle selected", (t) => t.split("\n").some((l) => l.startsWith("╔") && l.includes("idle · mem")));
    await tmux("send-keys", "-t", "usbd", "d");
    await screenWhere("the detach question", (t) => t.includes('Detach "idle"'));
    await tmux("send-keys", "-t", "usbd", "y");
    const text = await screenWhere("idle detached", (t) => panelOf(t, "idle").includes("detached"));
    expect(panelOf(text, "busy")).toContain("serving");
    keep("detach", text);
  }, 30_000);

  test("q, then y: every device is shut down, the exit status is 0 and the socket is gone", async () => {
    await tmux("send-keys", "-t", "usbd", "q");
    const asked = await screenWhere("the quit question", (t) => t.includes("Quit?"));
    keep("quit", asked);
    await tmux("send-keys", "-t", "usbd", "y");
    const exitFile = join(dir, "exit");
    const deadline = Date.now() + 20_000;
    while (!existsSync(exitFile) && Date.now() < deadline) await Bun.sleep(100);
    const after = await screen();
    keep("after-exit", after);
    expect(readFileSync(exitFile, "utf8").trim()).toBe("exit=0");
    expect(existsSync(socket)).toBe(false);
    // Back on the normal screen, the final stats lines name both devices.
    expect(after).toContain("stats busy:");
  }, 30_000);
});
