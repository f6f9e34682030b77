/**
 * The dashboard against a real engine: a Host serving two mem devices on a Unix socket, real I/O from qemu-io (a
 * child process), and key presses through ink-testing-library's stdin. Frames are plain text (no colour without
 * a terminal), so the assertions read what a user would read.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { render } from "ink-testing-library";
import { type BlockDevice, DeviceError } from "../../src/devices/device.ts";
import { openDedupDevice } from "../../src/devices/dedup/index.ts";
import { createMemDevice } from "../../src/devices/mem/index.ts";
import { openObjstoreDevice } from "../../src/devices/objstore/index.ts";
import { Host } from "../../src/engine/host.ts";
import { silentLogger } from "../../src/shared/log.ts";
import { App } from "../../src/ui/App.tsx";
import { removeDir, run, skipReason, tempDir } from "../clients/helpers.ts";
import { frameWhere } from "./frames.ts";
import { flushesOf, iopsOf, panelOf } from "./screen.ts";

const MiB = 1024 * 1024;
const skip = skipReason("dashboard", ["qemu-io"]);

describe.skipIf(skip !== undefined)("dashboard with a real engine", () => {
  let dir: string;
  let host: Host;
  let socket: string;
  let exits: Array<number>;
  let ui: ReturnType<typeof render>;

  beforeAll(async () => {
    dir = tempDir("usbd-ui-");
    socket = join(dir, "nbd.sock");
    host = new Host(silentLogger);
    const a = host.add("alpha", createMemDevice({ size: 64 * MiB }));
    const b = host.add("beta", createMemDevice({ size: 32 * MiB }));
    exits = [];
    // Drawn before the devices are served, as the CLI does, so the attach events reach the pane.
    ui = render(<App host={host} version="9.9.9" listen={`unix:${socket}`} startedAt={Date.now()} size={{ columns: 100, rows: 40 }} refreshMs={100} onExit={(code) => exits.push(code)} />);
    await host.serve({ kind: "unix", path: socket }, [a, b]);
  });

  afterAll(async () => {
    ui?.unmount();
    await host?.stop({ force: true }).catch(() => undefined);
    removeDir(dir);
  });

  test("every device has a panel with where it is served, its kind, size and state", async () => {
    const frame = await frameWhere(ui.lastFrame, (f) => panelOf(f, "alpha").includes("serving") && panelOf(f, "beta").includes("serving"), "both panels serving");
    expect(frame).toContain("usbd-tui 9.9.9");
    expect(frame.split("\n")[0]).toContain("network export");
    expect(panelOf(frame, "alpha")).toContain("64 MiB · serving");
    expect(panelOf(frame, "alpha")).toContain(`nbd+unix:///alpha?socket=${socket}`);
    expect(panelOf(frame, "beta")).toContain("32 MiB · serving");
    expect(frame).toMatch(/ f .*flush.* t .*trim.* d .*detach.* q .*quit.* \? .*help/);
    expect(frame).toContain("serving at nbd+unix:///alpha");
  });

  test("the numbers move after real I/O on one device, and only on that one", async () => {
    const uri = `nbd+unix:///alpha?socket=${socket}`;
    await run(["qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 8M", "-c", "read -P 0x5a 0 8M", uri]);
    const frame = await frameWhere(ui.lastFrame, (f) => iopsOf(panelOf(f, "alpha"), "W") > 0 && iopsOf(panelOf(f, "alpha"), "R") > 0, "alpha's IOPS to move");
    expect(iopsOf(panelOf(frame, "beta"), "W")).toBe(0);
    expect(iopsOf(panelOf(frame, "beta"), "R")).toBe(0);
    // The mem device's own gauge: 8 MiB allocated of 64.
    expect(panelOf(frame, "alpha")).toContain("allocated");
    expect(panelOf(frame, "alpha")).toContain("8 MiB/64 MiB");
  });

  test("f flushes the selected device: the flush counter moves and the event pane says how long it took", async () => {
    const before = flushesOf(panelOf(ui.lastFrame() ?? "", "alpha"));
    ui.stdin.write("f");
    const frame = await frameWhere(ui.lastFrame, (f) => /alpha\s+flush done in [0-9.]+ ms/.test(f), "the flush event");
    await frameWhere(ui.lastFrame, (f) => flushesOf(panelOf(f, "alpha")) === before + 1, "the flush counter");
    expect(frame).not.toMatch(/beta\s+flush done/);
  }, 15_000);

  test("? shows the help and any key closes it", async () => {
    ui.stdin.write("?");
    await frameWhere(ui.lastFrame, (f) => f.includes("SIGUSR1 flushes every device"), "the help screen");
    ui.stdin.write("x");
    await frameWhere(ui.lastFrame, (f) => f.includes("alpha · mem"), "the panels again");
  });

  test("t asks first, then reclaims inside the device and reports it", async () => {
    ui.stdin.write("t");
    await frameWhere(ui.lastFrame, (f) => f.includes('Trim "alpha"') && f.includes("no, keep serving"), "the trim question");
    ui.stdin.write("n");
    await frameWhere(ui.lastFrame, (f) => !f.includes('Trim "alpha"'), "the question to go");
    ui.stdin.write("t");
    await frameWhere(ui.lastFrame, (f) => f.includes('Trim "alpha"'), "the trim question again");
    ui.stdin.write("y");
    await frameWhere(ui.lastFrame, (f) => /alpha\s+.*(nothing to reclaim|reclaimed|trimmed)/.test(f), "the trim event");
  });

  test("arrows select the other device; d asks, then detaches it while the first keeps serving", async () => {
    ui.stdin.write("\u001B[B"); // down arrow
    await frameWhere(ui.lastFrame, (f) => f.split("\n").some((l) => l.startsWith("╔") && l.includes("beta · mem")), "beta selected");
    ui.stdin.write("d");
    await frameWhere(ui.lastFrame, (f) => f.includes('Detach "beta"'), "the detach question");
    ui.stdin.write("y");
    const frame = await frameWhere(ui.lastFrame, (f) => panelOf(f, "beta").includes("detached"), "beta detached");
    expect(panelOf(frame, "alpha")).toContain("serving");
    expect(frame).toMatch(/beta\s+withdrawn from nbd\+unix:\/\/\/beta/);
    const list = await run(["nbdinfo", "--list", `nbd+unix://?socket=${socket}`]);
    expect(list).toContain("alpha");
    expect(list).not.toContain("export=beta");
  });

  test("q asks while devices are attached, then shuts every device down in order and exits 0", async () => {
    ui.stdin.write("q");
    await frameWhere(ui.lastFrame, (f) => f.includes("Quit? 1 device will be flushed"), "the quit question");
    ui.stdin.write("y");
    const deadline = Date.now() + 10_000;
    while (exits.length === 0 && Date.now() < deadline) await Bun.sleep(50);
    expect(exits).toEqual([0]);
    expect(existsSync(socket)).toBe(false);
    expect(host.list().every((d) => d.state === "detached")).toBe(true);
  });
});

describe("errors show in the panel and the event pane, and the dashboard carries on", () => {
  test("a device whose flush fails (a device written for this test: a real disk cannot be made to fail on cue)", async () => {
    const mem = createMemDevice({ size: 8 * MiB });
    let background: string | undefined;
    const failing: BlockDevice = {
      kind: "flaky",
      size: mem.size,
      blockSize: mem.blockSize,
      capabilities: mem.capabilities,
      read: (offset, length) => mem.read(offset, length),
      write: (offset, data) => mem.write(offset, data),
      trim: (offset, length) => mem.trim(offset, length),
      flush: () => {
        background = "uploads failing: store unreachable";
        throw new DeviceError("EIO", "disk on fire");
      },
      close: () => mem.close(),
      stats: () => ({ gauges: [{ name: "dirty objects", value: 3, unit: "count", max: 4 }], ...(background ? { lastError: background } : {}) }),
    };
    const host = new Host(silentLogger);
    host.add("flaky", failing);
    const ui = render(<App host={host} version="0" startedAt={Date.now()} size={{ columns: 90, rows: 30 }} refreshMs={50} onExit={() => undefined} />);
    try {
      await frameWhere(ui.lastFrame, (f) => f.includes("flaky · flaky") && f.includes("dirty objects"), "the panel");
      ui.stdin.write("f");
      const frame = await frameWhere(ui.lastFrame, (f) => f.includes("flush failed: disk on fire") && f.includes("error: uploads failing"), "the error in the pane and the panel");
      // The device's own background error wins the panel's error line; the event pane has the flush failure.
      expect(frame).toMatch(/flaky\s+flush failed: disk on fire/);
      ui.stdin.write("?");
      await frameWhere(ui.lastFrame, (f) => f.includes("SIGUSR1 flushes every device"), "the help after the error");
    } finally {
      ui.unmount();
      await host.stop({ force: true }).catch(() => undefined);
    }
  });
});

describe("redraws", () => {
  test("an idle dashboard redraws about 4 times a second, no more", async () => {
    const host = new Host(silentLogger);
    host.add("calm", createMemDevice({ size: 8 * MiB }));
    const ui = render(<App host={host} version="0" startedAt={Date.now()} size={{ columns: 90, rows: 30 }} onExit={() => undefined} />);
    try {
      await frameWhere(ui.lastFrame, (f) => f.includes("calm · mem"), "the first frame");
      const before = ui.frames.length;
      await Bun.sleep(2000);
      const drawn = ui.frames.length - before;
      expect(drawn).toBeGreaterThanOrEqual(4);
      expect(drawn).toBeLessThanOrEqual(10);
    } finally {
      ui.unmount();
      await host.stop({ force: true });
    }
  });
});

describe("a device's own gauges, whatever the device", () => {
  test("dedup shows its dedup ratio and stored bytes; objstore its dirty objects (a bar), cache and upload backlog", async () => {
    const dir = tempDir("ui-gauges");
    const host = new Host(silentLogger);
    const dedup = openDedupDevice({ storeDir: dir, storeName: "d", size: 64 * MiB, compression: "none" });
    const objstore = await openObjstoreDevice({
      storeDir: dir,
      storeName: "o",
      size: 64 * MiB,
      objectSize: 1 * MiB,
      kind: "local",
      config: JSON.stringify({ path: join(dir, "objects") }),
      aesMode: "identity",
      flushEvery: 3600,
    });
    host.add("dd", dedup);
    host.add("ob", objstore);
    // The same 1 MiB four times over: one copy stored, a dedup ratio of 4. Three 1 MiB log objects not yet uploaded in objstore.
    const block = new Uint8Array(MiB);
    crypto.getRandomValues(block.subarray(0, 65536));
    for (let i = 0; i < 4; i++) await dedup.write(i * MiB, block);
    await dedup.flush();
    for (let i = 0; i < 3; i++) await objstore.write(i * MiB, block);
    const ui = render(<App host={host} version="0" startedAt={Date.now()} size={{ columns: 100, rows: 60 }} refreshMs={50} onExit={() => undefined} />);
    try {
      const frame = await frameWhere(ui.lastFrame, (f) => f.includes("dedup ratio 4.00x") && f.includes("dirty objects"), "both devices' gauges");
      expect(frame).toMatch(/stored 64 KiB/);
      expect(frame).toMatch(/dirty objects █+░* 3\/3/);
      expect(frame).toMatch(/cache 3 MiB/);
      expect(frame).toContain("upload backlog");
      // t on the objstore device (tab selects it) reclaims: it uploads everything, compacts and deletes what is dead.
      ui.stdin.write("\t");
      await frameWhere(ui.lastFrame, (f) => f.split("\n").some((l) => l.startsWith("╔") && l.includes("ob · objstore")), "ob selected");
      ui.stdin.write("t");
      await frameWhere(ui.lastFrame, (f) => f.includes('Trim "ob"'), "the trim question");
      ui.stdin.write("y");
      const after = await frameWhere(ui.lastFrame, (f) => /ob\s+reclaimed .*log objects? deleted from the store/.test(f), "the reclaim event");
      expect(after).toMatch(/dirty objects ░+ 0\/3/);
    } finally {
      ui.unmount();
      await host.stop({ force: true });
      removeDir(dir);
    }
  }, 30_000);
});
