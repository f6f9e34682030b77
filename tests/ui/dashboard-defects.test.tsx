/**
 * The dashboard defects a user found, each pinned by a test against a real engine: questions that fit at 80x24
 * and name the connected clients, a quit that asks twice while clients are connected, a scrollable event pane and a
 * full log, client and upload events with the device's name, a store outage and its recovery, an error line that
 * keeps its cause, a flush timer that never runs negative, keys on a detached device that say why they do nothing,
 * a sparkline with its scale, and wide characters measured in columns.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { render } from "ink-testing-library";
import type { BlockDevice } from "../../src/devices/device.ts";
import { createMemDevice } from "../../src/devices/mem/index.ts";
import { openObjstoreDevice } from "../../src/devices/objstore/index.ts";
import { Host } from "../../src/engine/host.ts";
import { silentLogger } from "../../src/shared/log.ts";
import { App } from "../../src/ui/App.tsx";
import { removeDir, run, skipReason, tempDir } from "../clients/helpers.ts";
import { s3ServerConfigJson, startS3Server } from "../helpers/s3-server.ts";
import { frameSize, frameWhere } from "./frames.ts";

const MiB = 1024 * 1024;
const skip = skipReason("dashboard defects", ["qemu-io"]);
const KEY = { pageUp: "\u001B[5~", pageDown: "\u001B[6~", end: "\u001B[F", escape: "\u001B", down: "\u001B[B" };

/** A qemu-io that connects to `uri` and stays connected (its `sleep` command) until killed. */
function idleClient(uri: string): Subprocess {
  return Bun.spawn(["qemu-io", "-f", "raw", "-c", "sleep 60000", uri], { stdin: "ignore", stdout: "ignore", stderr: "ignore" });
}

const oneLine = (text: string) => text.replace(/[│║]/g, " ").replace(/\s+/g, " ");
/** Ink subscribes a screen's keys in an effect after it draws: a key sent at once after a new frame may find none yet. */
const settle = () => Bun.sleep(150);

describe.skipIf(skip !== undefined)("questions and quitting with clients connected, at 80x24", () => {
  let dir: string;
  let host: Host;
  let socket: string;
  const clients: Subprocess[] = [];
  const exits: number[] = [];
  let ui: ReturnType<typeof render>;

  beforeAll(async () => {
    dir = tempDir("ui-quit");
    socket = join(dir, "nbd.sock");
    host = new Host(silentLogger);
    const a = host.add("alpha-with-a-long-name", createMemDevice({ size: 64 * MiB }));
    const b = host.add("beta", createMemDevice({ size: 32 * MiB }));
    ui = render(<App host={host} version="9.9.9" listen={`unix:${socket}`} startedAt={Date.now()} size={{ columns: 80, rows: 24 }} refreshMs={100} onExit={(code) => exits.push(code)} />);
    await host.serve({ kind: "unix", path: socket }, [a, b]);
    clients.push(idleClient(`nbd+unix:///alpha-with-a-long-name?socket=${socket}`), idleClient(`nbd+unix:///beta?socket=${socket}`));
    await frameWhere(ui.lastFrame, (f) => (f.match(/client qemu-io \(pid \d+\) connected/g) ?? []).length === 2, "both clients connected");
  });

  afterAll(async () => {
    for (const c of clients) c.kill("SIGKILL");
    ui?.unmount();
    await host?.stop({ force: true }).catch(() => undefined);
    removeDir(dir);
  });

  test("the header keeps its totals (IOPS and MB/s) at 80 columns", () => {
    const header = (ui.lastFrame() ?? "").split("\n")[0]!;
    expect(header).toMatch(/R \S+ W \S+ IOPS \S+ MB\/s/);
    expect(frameSize(header).columns).toBeLessThanOrEqual(80);
  });

  test("the detach question is shown whole, keys included, and names the clients that lose the device", async () => {
    ui.stdin.write("d");
    const frame = await frameWhere(ui.lastFrame, (f) => f.includes("no, keep serving"), "the detach question");
    await settle();
    expect(frameSize(frame).rows).toBeLessThanOrEqual(24);
    expect(frameSize(frame).columns).toBeLessThanOrEqual(80);
    expect(oneLine(frame)).toMatch(/Detach "alpha-with-a-long-name"\? It is flushed, then disconnected from its 1 client \(qemu-io \(pid \d+\)\), then closed\./);
    ui.stdin.write("n");
    await frameWhere(ui.lastFrame, (f) => !f.includes("no, keep serving"), "the question to go");
    await settle();
  });

  test("q names every connected client and their count; y asks again because they are connected; y then quits", async () => {
    ui.stdin.write("q");
    const first = await frameWhere(ui.lastFrame, (f) => f.includes("Quit?"), "the quit question");
    expect(oneLine(first)).toMatch(/Quit\? 2 devices will be flushed, disconnected and closed\. 2 clients connected: qemu-io \(pid \d+\) on alpha-with-a-long-name, qemu-io \(pid \d+\) on beta\./);
    expect(frameSize(first).rows).toBeLessThanOrEqual(24);
    expect(frameSize(first).columns).toBeLessThanOrEqual(80);
    await settle();
    ui.stdin.write("y");
    const second = await frameWhere(ui.lastFrame, (f) => f.includes("Really quit?"), "the second question");
    expect(oneLine(second)).toContain("2 clients still use these devices and will lose them now");
    expect(oneLine(second)).toContain("quit anyway");
    expect(exits).toEqual([]);
    await settle();
    ui.stdin.write("y");
    const deadline = Date.now() + 15_000;
    while (exits.length === 0 && Date.now() < deadline) await Bun.sleep(50);
    expect(exits).toEqual([0]);
  }, 30_000);
});

describe("the event pane scrolls, and l shows the whole log", () => {
  test("PgUp shows older events and holds still while new ones arrive; End follows again; l lists them all", async () => {
    const host = new Host(silentLogger);
    host.add("m", createMemDevice({ size: 8 * MiB }));
    for (let i = 0; i < 30; i++) await host.flush("m");
    const ui = render(<App host={host} version="0" startedAt={Date.now()} size={{ columns: 80, rows: 24 }} refreshMs={50} onExit={() => undefined} />);
    try {
      const following = await frameWhere(ui.lastFrame, (f) => f.includes("events (30)"), "the pane");
      const shownFlushes = (f: string) => (f.match(/flush done in/g) ?? []).length;
      const visible = shownFlushes(following);
      expect(visible).toBeGreaterThan(0);
      expect(visible).toBeLessThan(30);
      expect(following).toContain("PgUp: older");
      await settle();
      ui.stdin.write(KEY.pageUp);
      const back = await frameWhere(ui.lastFrame, (f) => f.includes("newer: PgDn"), "the older page");
      expect(back).toContain(`${visible} newer: PgDn`);
      await host.flush("m");
      const still = await frameWhere(ui.lastFrame, (f) => f.includes("events (31)"), "the new event counted");
      expect(still).toContain(`${visible + 1} newer: PgDn`);
      ui.stdin.write(KEY.end);
      await frameWhere(ui.lastFrame, (f) => f.includes("events (31)") && !f.includes("newer: PgDn"), "following again");
      ui.stdin.write("l");
      const log = await frameWhere(ui.lastFrame, (f) => f.includes("log: 31 events"), "the log view");
      expect(frameSize(log).rows).toBeLessThanOrEqual(24);
      await settle();
      ui.stdin.write(KEY.escape);
      await frameWhere(ui.lastFrame, (f) => f.includes("events (31)"), "the panels again");
    } finally {
      ui.unmount();
      await host.stop({ force: true });
    }
  });
});

describe.skipIf(skip !== undefined)("events name their device", () => {
  test("a client's connect and disconnect, on the export it chose", async () => {
    const dir = tempDir("ui-clients");
    const socket = join(dir, "nbd.sock");
    const host = new Host(silentLogger);
    const a = host.add("alpha", createMemDevice({ size: 8 * MiB }));
    const ui = render(<App host={host} version="0" startedAt={Date.now()} size={{ columns: 100, rows: 30 }} refreshMs={50} onExit={() => undefined} />);
    try {
      await host.serve({ kind: "unix", path: socket }, [a]);
      await run(["qemu-io", "-f", "raw", "-c", "write 0 64k", `nbd+unix:///alpha?socket=${socket}`]);
      const frame = await frameWhere(ui.lastFrame, (f) => /alpha\s+client qemu-io \(pid \d+\) disconnected after/.test(f), "the disconnect event");
      expect(frame).toMatch(/alpha\s+client qemu-io \(pid \d+\) connected/);
    } finally {
      ui.unmount();
      await host.stop({ force: true });
      removeDir(dir);
    }
  });

  test("objstore: upload rounds, the store failing (the cause on the panel) and working again, all under the device's name", async () => {
    const s3 = await startS3Server();
    const dir = tempDir("ui-objstore");
    const host = new Host(silentLogger);
    const device = await openObjstoreDevice({
      storeDir: dir,
      storeName: "vol",
      size: 16 * MiB,
      objectSize: MiB,
      kind: "s3",
      config: s3ServerConfigJson(s3),
      aesMode: "identity",
      flushEvery: 0.2,
      log: host.deviceLog("ob"),
      notify: (notice) => host.notice("ob", notice),
    });
    host.add("ob", device);
    const ui = render(<App host={host} version="0" startedAt={Date.now()} size={{ columns: 100, rows: 40 }} refreshMs={50} onExit={() => undefined} />);
    try {
      await device.write(0, new Uint8Array(MiB).fill(7));
      await frameWhere(ui.lastFrame, (f) => /ob\s+uploaded 1 log object, \S+ \S+ sent in/.test(f), "an upload");
      await s3.stop();
      await device.write(MiB, new Uint8Array(MiB).fill(8));
      const failing = await frameWhere(ui.lastFrame, (f) => /ob\s+uploads failing/.test(f), "the store error event", 20_000);
      // The panel's error line keeps the cause (the endpoint that failed), wrapped rather than cut.
      expect(oneLine(failing)).toContain(`error: upload of vol/log/0000000000000002.00000001 to s3 bucket "usbd" at ${s3.endpoint}`);
      expect(oneLine(failing)).toContain("ECONNREFUSED");
      await s3.restart();
      const back = await frameWhere(ui.lastFrame, (f) => /ob\s+the store works again/.test(f), "the recovery event", 30_000);
      expect(back).not.toContain("error: upload of");
    } finally {
      ui.unmount();
      await host.stop({ force: true }).catch(() => undefined);
      await s3.cleanup();
      removeDir(dir);
    }
  }, 60_000);
});

describe("what a panel says while an action runs, and after a detach", () => {
  test("a flush's timer counts up from zero, never below (a flush held back on purpose: a real disk cannot be made slow on cue)", async () => {
    const mem = createMemDevice({ size: 8 * MiB });
    const slow: BlockDevice = Object.assign(Object.create(mem) as BlockDevice, { kind: "slow", flush: () => Bun.sleep(800).then(() => mem.flush()) });
    const host = new Host(silentLogger);
    host.add("slow", slow);
    const ui = render(<App host={host} version="0" startedAt={Date.now()} size={{ columns: 100, rows: 30 }} refreshMs={50} onExit={() => undefined} />);
    try {
      await frameWhere(ui.lastFrame, (f) => f.includes("slow · slow"), "the panel");
      await settle();
      ui.stdin.write("f");
      const timers: number[] = [];
      const deadline = Date.now() + 5000;
      while (Date.now() < deadline) {
        const frame = ui.lastFrame() ?? "";
        const shown = /flushing (-?[0-9.]+) (ms|s)…/.exec(frame);
        if (shown) timers.push(Number(shown[1]) * (shown[2] === "s" ? 1000 : 1));
        expect(frame).not.toMatch(/flushing -/);
        if (frame.includes("flush done")) break;
        await Bun.sleep(20);
      }
      expect(timers.length).toBeGreaterThan(2);
      expect(Math.min(...timers)).toBeGreaterThanOrEqual(0);
      expect(timers).toEqual([...timers].sort((x, y) => x - y));
      expect(ui.lastFrame()).toMatch(/slow\s+flush done in [0-9.]+ ms/);
    } finally {
      ui.unmount();
      await host.stop({ force: true });
    }
  });

  test("after a detach, f, t and d say why they do nothing", async () => {
    const host = new Host(silentLogger);
    host.add("gone", createMemDevice({ size: 8 * MiB }));
    host.list()[0]!.state = "detached";
    const ui = render(<App host={host} version="0" startedAt={Date.now()} size={{ columns: 100, rows: 30 }} refreshMs={50} onExit={() => undefined} />);
    try {
      await frameWhere(ui.lastFrame, (f) => f.includes("gone · mem"), "the panel");
      await settle();
      for (const [key, verb] of [["f", "flush"], ["t", "trim"], ["d", "detach"]] as const) {
        ui.stdin.write(key);
        await frameWhere(ui.lastFrame, (f) => f.includes(`"gone" is detached: there is nothing to ${verb}`), `the ${verb} notice`);
      }
    } finally {
      ui.unmount();
    }
  });
});

describe.skipIf(skip !== undefined)("the sparkline's scale, and wide characters", () => {
  test("each rate line ends with the peak its sparkline is scaled to; a name in wide characters keeps every line within the width", async () => {
    const dir = tempDir("ui-wide");
    const socket = join(dir, "nbd.sock");
    const host = new Host(silentLogger);
    const name = "データ🚀";
    const a = host.add(name, createMemDevice({ size: 8 * MiB }));
    const ui = render(<App host={host} version="0" startedAt={Date.now()} size={{ columns: 80, rows: 24 }} refreshMs={50} onExit={() => undefined} />);
    try {
      await host.serve({ kind: "unix", path: socket }, [a]);
      await run(["qemu-io", "-f", "raw", "-c", "write 0 1M", "-c", "write 1M 1M", `nbd+unix:///${encodeURIComponent(name)}?socket=${socket}`]);
      // The second's ops show once the second is complete: the peak is the largest count in the history.
      const frame = await frameWhere(ui.lastFrame, (f) => /W\s+\S+ IOPS\s+\S+ MB\/s\s+\S*[▂▃▄▅▆▇█]\S*\s+[1-9]/.test(f), "a write sparkline with a scale", 10_000);
      expect(frameSize(frame).columns).toBeLessThanOrEqual(80);
      expect(frame).toContain(`${name} · mem`);
    } finally {
      ui.unmount();
      await host.stop({ force: true });
      removeDir(dir);
    }
  });
});
