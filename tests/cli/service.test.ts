// Running as a service: systemd's notify messages (a test that owns the datagram socket reads them), journald's
// line form when stderr is the journal and logfmt otherwise, stdout under --json holding only JSON lines (jq reads
// it), and --pid-file.
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, fstatSync, openSync, closeSync, readFileSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { closeFd } from "../../src/ffi/libc.ts";
import { AF_UNIX, SOCK_DGRAM, bindUnix, openSocket, recvNonBlocking } from "../../src/ffi/sockets.ts";
import { logfmtValue, textLogger } from "../../src/shared/log.ts";
import { removeDir, runResult, skipReason, tempDir } from "../clients/helpers.ts";
import { waitFor, watch } from "../helpers/process.ts";

const ROOT = resolve(import.meta.dir, "../..");
const CLI = [join(ROOT, "node_modules/.bin/bun"), join(ROOT, "bin/usbd-tui.ts")];
const dirs: string[] = [];
const dir = (name: string) => {
  const d = tempDir(name);
  dirs.push(d);
  return d;
};
afterAll(() => dirs.forEach(removeDir));

/** A datagram socket bound at `name` (a path, or "\0..." abstract), as systemd's notify socket is. */
function notifySocket(name: string): { messages: () => string[]; close: () => void } {
  const fd = openSocket(AF_UNIX, SOCK_DGRAM);
  bindUnix(fd, name);
  const received: string[] = [];
  const buffer = new Uint8Array(4096);
  return {
    messages() {
      for (;;) {
        const n = recvNonBlocking(fd, buffer);
        if (n <= 0) return received;
        received.push(new TextDecoder().decode(buffer.subarray(0, n)));
      }
    },
    close: () => closeFd(fd),
  };
}

describe("sd_notify", () => {
  for (const abstract of [false, true]) {
    test(`READY=1 with MAINPID and STATUS once serving, STOPPING=1 at SIGTERM (${abstract ? "an abstract @name" : "a path"})`, async () => {
      const d = dir("notify");
      const name = abstract ? `\0usbd-test-notify-${process.pid}-${Date.now()}` : join(d, "notify");
      const socket = notifySocket(name);
      try {
        const env = { NOTIFY_SOCKET: abstract ? `@${name.slice(1)}` : name };
        const daemon = watch([...CLI, "--headless", "--store-size=8MiB", "--listen", `unix:${join(d, "n.sock")}`, "--control", "none"], { env });
        const ready = await waitFor("READY=1", daemon, () => socket.messages().find((m) => m.includes("READY=1")), 20_000);
        expect(ready).toContain(`MAINPID=${daemon.proc.pid}`);
        expect(ready).toMatch(/STATUS=serving 1 device: R 0 W 0 IOPS, 0\.0 MB\/s, 0 clients/);
        // READY comes once the socket serves: a client gets an answer at once.
        expect(existsSync(join(d, "n.sock"))).toBe(true);
        expect(await daemon.stop("SIGTERM", 20_000)).toBe(0);
        const all = socket.messages();
        const stopping = all.find((m) => m.includes("STOPPING=1"));
        expect(stopping).toContain("STATUS=stopping (SIGTERM)");
        expect(all.indexOf(stopping!)).toBeGreaterThan(all.indexOf(ready));
      } finally {
        socket.close();
      }
    }, 30_000);
  }

  test("without NOTIFY_SOCKET nothing is sent and nothing is logged about it", async () => {
    const d = dir("plain");
    const daemon = watch([...CLI, "--headless", "--store-size=8MiB", "--listen", `unix:${join(d, "n.sock")}`, "--control", "none"], { env: { NOTIFY_SOCKET: "" } });
    await waitFor("the banner", daemon, () => (daemon.stdout().includes("URI:") ? true : undefined), 20_000);
    expect(await daemon.stop("SIGTERM", 20_000)).toBe(0);
    expect(daemon.stderr()).not.toContain("notify");
  });
});

describe("log lines", () => {
  test("logfmt: values with spaces, = or quotes are quoted, so every line splits into key=value pairs", () => {
    const lines: string[] = [];
    textLogger("info", (l) => lines.push(l)).log("warn", 'a message with = and "quotes"', { device: "vm 1", error: "x=1", count: 3 });
    expect(lines[0]).toMatch(/^time=\d{4}-\d\d-\d\dT[0-9:.]+Z level=warn msg="a message with = and \\"quotes\\"" device="vm 1" error="x=1" count=3\n$/);
    const pairs = [...lines[0]!.matchAll(/(\w+)=("(?:[^"\\]|\\.)*"|\S+)/g)].map((m) => m[1]);
    expect(pairs).toEqual(["time", "level", "msg", "device", "error", "count"]);
    expect(logfmtValue("")).toBe('""');
    expect(logfmtValue("plain")).toBe("plain");
  });

  test("with stderr on the journal (JOURNAL_STREAM names it): a priority prefix and no timestamp; otherwise logfmt with one", async () => {
    const d = dir("journal");
    const errFile = join(d, "stderr");
    for (const journal of [true, false]) {
      const fd = openSync(errFile, "w");
      const stat = fstatSync(fd);
      const env = { ...process.env, JOURNAL_STREAM: journal ? `${stat.dev}:${stat.ino}` : "1:2" };
      const proc = Bun.spawn([...CLI, "--headless", "--store-size=8MiB", "--listen", `unix:${join(d, "n.sock")}`, "--control", "none"], { stdout: "pipe", stderr: fd, env });
      const deadline = Date.now() + 20_000;
      while (!readFileSync(errFile, "utf8").includes("serving at") && Date.now() < deadline) await Bun.sleep(50);
      proc.kill("SIGTERM");
      expect(await proc.exited).toBe(0);
      closeSync(fd);
      const lines = readFileSync(errFile, "utf8").trim().split("\n");
      if (journal) {
        expect(lines.every((l) => /^<[3-7]>msg=/.test(l))).toBe(true);
        expect(lines).toContain(`<6>msg="serving at nbd+unix:///usbd?socket=${join(d, "n.sock")}" device=usbd event=attached`);
        expect(lines.join("\n")).not.toContain("time=");
      } else {
        expect(lines.every((l) => /^time=\S+Z level=(debug|info|warn|error) msg=/.test(l))).toBe(true);
      }
    }
  });
});

describe("--json: stdout holds only JSON lines", () => {
  test("jq reads the whole of stdout: the banner, stats lines and the final line", async () => {
    if (Bun.which("jq") === null) return void skipReason("--json | jq", ["jq"]);
    const d = dir("json");
    const pidFile = join(d, "pid");
    const pipeline = Bun.spawn(
      ["sh", "-c", `${CLI.join(" ")} --json --store-size=8MiB --listen unix:${join(d, "n.sock")} --stats-interval 0.3 --pid-file ${pidFile} --control none | jq -c '[.type, .device]'`],
      { stdout: "pipe", stderr: "pipe", stdin: "ignore" },
    );
    const deadline = Date.now() + 20_000;
    while (!existsSync(pidFile) && Date.now() < deadline) await Bun.sleep(50);
    await Bun.sleep(1000);
    process.kill(Number(readFileSync(pidFile, "utf8")), "SIGTERM");
    const [out, err, code] = await Promise.all([new Response(pipeline.stdout).text(), new Response(pipeline.stderr).text(), pipeline.exited]);
    expect(code, err).toBe(0);
    const rows = out.trim().split("\n");
    expect(rows[0]).toBe('["serving","usbd"]');
    expect(rows.filter((r) => r === '["stats","usbd"]').length).toBeGreaterThanOrEqual(1);
    expect(rows.at(-1)).toBe('["final","usbd"]');
  }, 30_000);
});

describe("--pid-file", () => {
  test("holds the pid while serving, keeps a second daemon out (exit 2), and is removed at exit", async () => {
    const d = dir("pid");
    const pidFile = join(d, "usbd.pid");
    const args = ["--headless", "--store-size=8MiB", "--pid-file", pidFile, "--control", "none"];
    const daemon = watch([...CLI, ...args, "--listen", `unix:${join(d, "a.sock")}`]);
    await waitFor("the pid file", daemon, () => (existsSync(pidFile) ? true : undefined), 20_000);
    expect(readFileSync(pidFile, "utf8")).toBe(`${daemon.proc.pid}\n`);
    expect(statSync(pidFile).mode & 0o777).toBe(0o644);
    const second = await runResult([...CLI, ...args, "--listen", `unix:${join(d, "b.sock")}`]);
    expect(second.exitCode).toBe(2);
    expect(second.stderr).toContain(`names pid ${daemon.proc.pid}, which is running`);
    expect(await daemon.stop("SIGTERM", 20_000)).toBe(0);
    expect(existsSync(pidFile)).toBe(false);
  });
});
