// `usbd-tui ctl` against a running headless daemon: status matches what the daemon's own stats report, flush moves
// the flush counter, detach withdraws one export, events streams, stop is refused while clients are connected
// (unless --force), and the control socket is private and found without --control.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { statSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { type Daemon, removeDir, run, runResult, skipReason, startDaemon, tempDir } from "../clients/helpers.ts";
import { finalStats } from "../clients/daemon-stats.ts";
import { waitFor, watch } from "../helpers/process.ts";

const ROOT = resolve(import.meta.dir, "../..");
const CLI = [join(ROOT, "node_modules/.bin/bun"), join(ROOT, "bin/usbd-tui.ts")];
const skip = skipReason("ctl", ["qemu-io", "nbdinfo"]);

interface StatusJson {
  daemon: { pid: number; control: string };
  devices: Array<{ device: string; state: string; totals: Record<string, { ops: number; bytes: number }>; clients: unknown[] }>;
}

describe.skipIf(skip !== undefined)("usbd-tui ctl against a running daemon", () => {
  let dir: string;
  let control: string;
  let daemon: Daemon;
  const ctl = (...args: string[]) => runResult([...CLI, "ctl", "--control", control, ...args], { timeoutMs: 20_000 });
  const status = async (): Promise<StatusJson> => {
    const r = await ctl("status", "--json");
    expect(r.exitCode, r.stderr).toBe(0);
    return JSON.parse(r.stdout) as StatusJson;
  };

  beforeAll(async () => {
    dir = tempDir("ctl");
    control = join(dir, "control.sock");
    daemon = await startDaemon({ devType: "mem", size: "64MiB", statsIntervalS: 60, extraArgs: ["--control", control] });
  });

  afterAll(() => {
    daemon?.kill();
    removeDir(dir);
  });

  test("the control socket is private to its owner (0600)", () => {
    expect(statSync(control).mode & 0o777).toBe(0o600);
  });

  test("status --json counts what a client did, as the daemon's own final stats line does", async () => {
    await run(["qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 4M", "-c", "read -P 0x5a 0 4M", "-c", "write 8M 64k", daemon.uri]);
    const s = await status();
    expect(s.daemon.pid).toBe(daemon.proc.pid);
    const d = s.devices[0]!;
    expect(d.device).toBe("usbd");
    expect(d.state).toBe("serving");
    expect(d.totals.write!.bytes).toBe(4 * 1024 * 1024 + 65536);
    expect(d.totals.read!.bytes).toBe(4 * 1024 * 1024);
    const text = await ctl("status");
    expect(text.stdout).toContain(`(pid ${daemon.proc.pid})`);
    expect(text.stdout).toMatch(/usbd: mem, 64 MiB, serving, nbd\+unix:/);
  });

  test("flush moves the flush counter", async () => {
    const before = (await status()).devices[0]!.totals.flush!.ops;
    const r = await ctl("flush", "usbd");
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^usbd: flush done in [0-9.]+ ms/);
    expect((await status()).devices[0]!.totals.flush!.ops).toBe(before + 1);
  });

  test("events streams an event as it happens", async () => {
    const events = watch([...CLI, "ctl", "--control", control, "events", "--json"]);
    try {
      // The stream is subscribed once the daemon has answered; a flush after that must come through.
      await Bun.sleep(500);
      await ctl("flush");
      const line = await waitFor("a flushed event", events, () => events.stdout().split("\n").find((l) => l.includes('"kind":"flushed"')), 10_000);
      expect(JSON.parse(line)).toMatchObject({ device: "usbd", kind: "flushed", level: "info" });
    } finally {
      events.kill();
    }
  });

  test("mistakes: an unknown device is the daemon's refusal (exit 1); an unknown command and a missing daemon are usage errors (exit 2)", async () => {
    const unknown = await ctl("flush", "nope");
    expect(unknown.exitCode).toBe(1);
    expect(unknown.stderr).toContain('no device named "nope"');
    expect((await ctl("frobnicate")).exitCode).toBe(2);
    const none = await runResult([...CLI, "ctl", "--control", join(dir, "missing.sock"), "status"]);
    expect(none.exitCode).toBe(2);
    expect(none.stderr).toContain("no daemon is listening there");
  });

  test("stop is refused while a client is connected, names it, and goes through with --force; the totals match the daemon's final line", async () => {
    const client = Bun.spawn(["qemu-io", "-f", "raw", "-c", "sleep 60000", daemon.uri], { stdout: "ignore", stderr: "ignore" });
    try {
      const deadline = Date.now() + 10_000;
      while ((await status()).devices[0]!.clients.length === 0 && Date.now() < deadline) await Bun.sleep(50);
      const totals = (await status()).devices[0]!.totals;
      const refused = await ctl("stop");
      expect(refused.exitCode).toBe(1);
      expect(refused.stderr).toMatch(/1 client is connected \(qemu-io \(pid \d+\) on usbd\) and would lose their device; stop anyway with --force/);
      const forced = await ctl("stop", "--force");
      expect(forced.exitCode, forced.stderr).toBe(0);
      expect(forced.stdout).toContain("the daemon exits with 0");
      expect(await daemon.proc.exited).toBe(0);
      const final = finalStats(daemon.stdout()) as unknown as { totals: typeof totals };
      expect(final.totals.write).toEqual(totals.write!);
      expect(final.totals.read).toEqual(totals.read!);
    } finally {
      client.kill("SIGKILL");
    }
  }, 30_000);
});

describe.skipIf(skip !== undefined)("ctl detach withdraws one export of several", () => {
  test("the other export keeps serving", async () => {
    const dir = tempDir("ctl-detach");
    const socket = join(dir, "nbd.sock");
    const control = join(dir, "c.sock");
    const config = join(dir, "two.toml");
    writeFileSync(config, `[[device]]\nname = "a"\nstore-size = "8MiB"\n[[device]]\nname = "b"\nstore-size = "8MiB"\n`);
    const d = watch([...CLI, "--headless", "--listen", `unix:${socket}`, "--config", config, "--control", control]);
    try {
      await waitFor("the banner", d, () => (d.stdout().match(/URI:/g)?.length === 2 ? true : undefined), 20_000);
      const r = await runResult([...CLI, "ctl", "--control", control, "detach", "b"]);
      expect(r.exitCode, r.stderr).toBe(0);
      expect(r.stdout).toContain("b: detached");
      const list = await run(["nbdinfo", "--list", `nbd+unix:///?socket=${socket}`]);
      expect(list).toContain(`export="a"`);
      expect(list).not.toContain(`export="b"`);
      const again = await runResult([...CLI, "ctl", "--control", control, "detach", "b"]);
      expect(again.exitCode).toBe(1);
      expect(again.stderr).toContain("b is already detached");
    } finally {
      expect(await d.stop("SIGTERM", 20_000)).toBe(0);
      removeDir(dir);
    }
  });
});

describe("the default control socket", () => {
  test("a daemon without --control is found by ctl in $XDG_RUNTIME_DIR/usbd-tui (run as an unprivileged user)", async () => {
    if (process.getuid?.() !== 0 || Bun.which("setpriv") === null) return void console.warn("skipped: needs root and setpriv to run as another user");
    const dir = tempDir("ctl-default");
    const runtime = join(dir, "runtime");
    const { chmodSync, chownSync, mkdirSync } = await import("node:fs");
    mkdirSync(runtime);
    chownSync(runtime, 65534, 65534);
    chmodSync(dir, 0o755);
    const env = { XDG_RUNTIME_DIR: runtime, HOME: runtime };
    const asNobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"];
    const d = watch([...asNobody, ...CLI, "--headless", "--listen", `unix:${join(runtime, "n.sock")}`, "--store-size=8MiB", "--export-name", "found"], { env });
    try {
      await waitFor("the banner", d, () => (d.stdout().includes("URI:") ? true : undefined), 20_000);
      const r = await runResult([...asNobody, ...CLI, "ctl", "status"], { env });
      expect(r.exitCode, r.stderr).toBe(0);
      expect(r.stdout).toContain(`control ${join(runtime, "usbd-tui", `found.${d.proc.pid}.sock`)}`);
      expect(statSync(join(runtime, "usbd-tui")).mode & 0o777).toBe(0o700);
    } finally {
      expect(await d.stop("SIGTERM", 20_000)).toBe(0);
      removeDir(dir);
    }
  });
});
