/**
 * Acceptance for the listener's limits and deadlines: half-finished handshakes are closed at the handshake timeout,
 * the connection limit refuses with a log line, a process at its descriptor limit refuses new clients without
 * spinning (and one out of descriptors for any reason stops accepting until they are free), a burst of connects fits
 * the accept queue, and the Unix socket is 0600 (0660 for --socket-group) whatever the umask.
 */
import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { statSync } from "node:fs";
import { join, resolve } from "node:path";
import type { Socket } from "bun";
import { type Daemon, type DaemonOptions, run, startDaemon, stopAndRemove, tempDir } from "../clients/helpers.ts";
import { RawClient, openExport, pattern, u32 } from "../protocol/raw-client.ts";

setDefaultTimeout(120_000);

const MiB = 1024 * 1024;
const ROOT = resolve(import.meta.dir, "../..");

const started: Daemon[] = [];
afterAll(() => {
  for (const d of started) d.kill();
});

async function daemon(extra: readonly string[], more: Partial<DaemonOptions> = {}): Promise<{ daemon: Daemon; dir: string }> {
  const dir = tempDir("limits");
  const d = await startDaemon({ devType: "mem", size: "64MiB", storeDir: dir, storeName: "disk", extraArgs: extra, ...more });
  started.push(d);
  return { daemon: d, dir };
}

/** CPU seconds (user + system) process `pid` has used so far. */
async function cpuSeconds(pid: number): Promise<number> {
  const stat = await Bun.file(`/proc/${pid}/stat`).text();
  // Fields after the command name (which may hold spaces, so split after its closing parenthesis).
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** A connection that sends the client flags and then nothing (a half-finished handshake); `closedAt` once it ends. */
interface Idle {
  socket: Socket<undefined> | undefined;
  closedAt: number | undefined;
  failed: string | undefined;
}

async function idleClients(path: string, count: number): Promise<Idle[]> {
  const all: Idle[] = [];
  await Promise.all(
    Array.from({ length: count }, async () => {
      const idle: Idle = { socket: undefined, closedAt: undefined, failed: undefined };
      all.push(idle);
      try {
        idle.socket = await Bun.connect({
          unix: path,
          socket: {
            open: (s) => void s.write(u32(3)),
            data: () => {},
            close: () => {
              idle.closedAt ??= Date.now();
            },
            error: () => {
              idle.closedAt ??= Date.now();
            },
          },
        });
      } catch (error) {
        idle.failed = error instanceof Error ? error.message : String(error);
      }
    }),
  );
  return all;
}

async function roundTrip(path: string): Promise<void> {
  const c = await openExport(path, { exportName: "disk" });
  const data = pattern(8192, 3);
  await c.write(MiB, data);
  expect(await c.read(MiB, data.length)).toEqual(Buffer.from(data));
  c.raw.close();
}

describe("the handshake timeout", () => {
  test("1000 idle half-finished handshakes are all closed after --handshake-timeout, and not before; the server then serves", async () => {
    const { daemon: d, dir } = await daemon(["--handshake-timeout=2", "--max-connections=1100"]);
    const opened = Date.now();
    const idle = await idleClients(d.socket, 1000);
    expect(idle.filter((i) => i.failed !== undefined)).toEqual([]);
    await Bun.sleep(1000);
    expect(idle.filter((i) => i.closedAt !== undefined).length).toBe(0);
    for (let i = 0; i < 100 && idle.some((c) => c.closedAt === undefined); i++) await Bun.sleep(100);
    const closedAfter = idle.map((i) => (i.closedAt ?? Number.POSITIVE_INFINITY) - opened);
    expect(Math.min(...closedAfter)).toBeGreaterThanOrEqual(1900);
    expect(Math.max(...closedAfter)).toBeLessThan(8000);
    expect(d.stderr()).toContain("did not finish the handshake within 2 s (--handshake-timeout)");
    await roundTrip(d.socket);
    await stopAndRemove(d, dir);
  });
});

describe("the connection limit", () => {
  test("with --max-connections 3 a fourth client is closed at once with a log line; once one leaves, a new one is served", async () => {
    const { daemon: d, dir } = await daemon(["--max-connections=3"]);
    const three = await Promise.all([0, 1, 2].map(() => openExport(d.socket, { exportName: "disk" })));
    const fourth = await RawClient.connect(d.socket);
    await fourth.waitClosed(1000);
    expect(fourth.buffered).toBe(0);
    expect(d.stderr()).toContain("3 connections are open, the most allowed (--max-connections)");
    three[0]!.raw.close();
    await three[0]!.raw.waitClosed();
    await Bun.sleep(100);
    await roundTrip(d.socket);
    for (const c of three.slice(1)) c.raw.close();
    await stopAndRemove(d, dir);
  });
});

describe("the descriptor limit", () => {
  test("at the fd limit new clients are refused without spinning (< 10% of a core); once the idle ones are gone a client connects within 2 s", async () => {
    const { daemon: d, dir } = await daemon(["--handshake-timeout=3", "--max-connections=2000"], { prefix: ["prlimit", "--nofile=160:160"] });
    const opened = Date.now();
    const idle = await idleClients(d.socket, 400);
    // Refusals are accepts that close at once; a loaded machine (CI saw 189 still open after a fixed 300 ms) may take
    // longer to work through the burst, but all of them come well before the 3 s handshake timeout.
    const stillOpen = () => idle.filter((i) => i.closedAt === undefined).length;
    for (let i = 0; i < 40 && stillOpen() >= 160; i++) await Bun.sleep(50);
    const held = stillOpen();
    // Refused at once: everything past what the limit leaves room for (160 less the reserve and the daemon's own).
    expect(held).toBeGreaterThan(50);
    expect(held).toBeLessThan(160);
    expect(d.stderr()).toContain("near the limit of 160 open files");
    const before = await cpuSeconds(d.proc.pid);
    await Bun.sleep(1500);
    expect(await cpuSeconds(d.proc.pid) - before).toBeLessThan(0.15);
    for (let i = 0; i < 100 && idle.some((c) => c.closedAt === undefined); i++) await Bun.sleep(50);
    expect(idle.every((c) => c.closedAt !== undefined)).toBe(true);
    expect(Date.now() - opened).toBeGreaterThan(2900);
    const t = Date.now();
    await roundTrip(d.socket);
    expect(Date.now() - t).toBeLessThan(2000);
    await stopAndRemove(d, dir);
  });

  test("a process out of descriptors for another reason stops accepting instead of spinning, and accepts again once they are free", async () => {
    const dir = tempDir("emfile");
    const path = join(dir, "nbd.sock");
    const child = Bun.spawn(["prlimit", "--nofile=64:64", join(ROOT, "node_modules/.bin/bun"), join(import.meta.dir, "fixtures/emfile-server.ts"), path], {
      stdin: "pipe",
      stdout: "pipe",
      stderr: "pipe",
    });
    const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let out = "";
    const waitLine = async (prefix: string) => {
      while (!out.split("\n").some((l) => l.startsWith(prefix))) {
        const { value, done } = await lines.read();
        if (done) throw new Error(`fixture exited before "${prefix}": ${out}`);
        out += value;
      }
    };
    try {
      await waitLine("full");
      // A client arriving now would leave Bun retrying accept() forever; the watchdog takes the socket away instead.
      const attempt = Bun.connect({ unix: path, socket: { data() {}, open() {} } }).catch(() => undefined);
      await Bun.sleep(1500);
      const before = await cpuSeconds(child.pid);
      await Bun.sleep(1500);
      expect(await cpuSeconds(child.pid) - before).toBeLessThan(0.15);
      (await attempt)?.end();
      child.stdin.write("release\n");
      await waitLine("released");
      const t = Date.now();
      let served = false;
      while (!served && Date.now() - t < 3000) {
        served = await openExport(path, { exportName: "disk" }).then(
          (c) => {
            c.raw.close();
            return true;
          },
          () => false,
        );
        if (!served) await Bun.sleep(100);
      }
      expect(served).toBe(true);
      expect(Date.now() - t).toBeLessThan(2000);
      child.stdin.write("stop\n");
      expect(await child.exited).toBe(0);
      const err = await new Response(child.stderr).text();
      expect(err).toContain("out of file descriptors (EMFILE/ENFILE)");
      expect(err).toContain("accepts connections again");
    } finally {
      child.kill("SIGKILL");
      await run(["rm", "-rf", dir]);
    }
  });
});

describe("the accept queue", () => {
  test("is 4096 deep (Bun's own is 512), and a burst of 2000 connects all reach the server", async () => {
    const { daemon: d, dir } = await daemon(["--max-connections=3000"]);
    const listing = await run(["ss", "-lxn"]);
    const line = listing.split("\n").find((l) => l.includes(d.socket));
    expect(line?.split(/\s+/)[3]).toBe("4096");
    const idle = await idleClients(d.socket, 2000);
    expect(idle.filter((i) => i.failed !== undefined).map((i) => i.failed)).toEqual([]);
    for (const i of idle) i.socket?.terminate();
    await stopAndRemove(d, dir);
  });
});

describe("the Unix socket's mode", () => {
  const umask000 = ["sh", "-c", 'umask 000; exec "$@"', "sh"];

  test("is 0600 under umask 000", async () => {
    const { daemon: d, dir } = await daemon([], { prefix: umask000 });
    expect((statSync(d.socket).mode & 0o777).toString(8)).toBe("600");
    await stopAndRemove(d, dir);
  });

  test("is 0660 and owned by the group with --socket-group", async () => {
    const { daemon: d, dir } = await daemon(["--socket-group=daemon"], { prefix: umask000 });
    const st = statSync(d.socket);
    expect((st.mode & 0o777).toString(8)).toBe("660");
    expect(st.gid).toBe(Number((await run(["getent", "group", "daemon"])).split(":")[2]));
    await stopAndRemove(d, dir);
  });
});
