// The usbd-tui command as users run it: exit codes, the kernel-less message, signals, TCP, and socket hygiene.
import { describe, expect, test } from "bun:test";
import { existsSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { removeDir, run, runResult, startDaemon, tempDir } from "../clients/helpers.ts";

const ROOT = resolve(import.meta.dir, "../..");
const CLI = [join(ROOT, "node_modules/.bin/bun"), join(ROOT, "bin/usbd-tui.ts")];

describe("usage errors exit 2 with a message that names the fix", () => {
  test("without --listen on a kernel without NBD support, the message names --listen", async () => {
    const r = await runResult([...CLI, "--headless"]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain("--listen unix:");
    expect(r.stderr.trim().split("\n").length).toBe(1);
  });

  test("without root (CAP_SYS_ADMIN) the kernel path says so in one line and names --listen", async () => {
    if (process.getuid?.() !== 0 || Bun.which("setpriv") === null) return void console.warn("skipped: needs root and setpriv to drop privileges");
    const r = await runResult(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", ...CLI, "--headless"]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain("needs root (CAP_SYS_ADMIN)");
    expect(r.stderr).toContain("--listen unix:");
    expect(r.stderr.trim().split("\n").length).toBe(1);
  });

  test("kernel-only flags with --listen are usage errors", async () => {
    const r = await runResult([...CLI, "--listen", "unix:/tmp/never.sock", "--reattach", "/dev/nbd0"]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain("--reattach only applies when attaching to the kernel");
  });

  test("an unknown flag, an unknown device type and a bad listen address", async () => {
    for (const args of [["--frobnicate"], ["--dev-type=tape", "--listen", "unix:/tmp/x.sock"], ["--listen", "carrier-pigeon"]]) {
      const r = await runResult([...CLI, ...args]);
      expect(r.exitCode).toBe(2);
      expect(r.stderr).toMatch(/^usbd-tui: .+/);
    }
  });

  test("--help lists the seed flags and exits 0", async () => {
    const out = await run([...CLI, "--help"]);
    for (const flag of ["--dev-type", "--store-dir", "--store-name", "--store-size", "--listen", "--stats-interval", "--json"]) {
      expect(out).toContain(flag);
    }
  });

  test("a socket path where another server already listens is refused, not stolen", async () => {
    const daemon = await startDaemon({ devType: "mem", size: "64MiB" });
    try {
      const r = await runResult([...CLI, "--headless", "--store-size=64MiB", "--listen", `unix:${daemon.socket}`]);
      expect(r.exitCode).toBe(2);
      expect(r.stderr).toContain("already listening");
      await run(["nbdinfo", "--size", daemon.uri]);
    } finally {
      await daemon.stop();
    }
  });
});

describe("running and stopping", () => {
  test("a stale socket file left by a crash is replaced, and removed again at exit", async () => {
    const dir = tempDir("stale");
    const socket = join(dir, "s.sock");
    try {
      const first = Bun.spawn([...CLI, "--headless", "--store-size=64MiB", "--listen", `unix:${socket}`], { stdout: "ignore", stderr: "ignore" });
      while (!existsSync(socket)) await Bun.sleep(20);
      first.kill("SIGKILL");
      await first.exited;
      expect(existsSync(socket)).toBe(true);
      const second = Bun.spawn([...CLI, "--headless", "--store-size=64MiB", "--listen", `unix:${socket}`], { stdout: "pipe", stderr: "pipe" });
      const reader = second.stdout.getReader();
      let out = "";
      while (!out.includes("URI:")) out += new TextDecoder().decode((await reader.read()).value);
      await run(["nbdinfo", "--size", `nbd+unix:///?socket=${socket}`]);
      second.kill("SIGINT");
      expect(await second.exited).toBe(0);
      expect(existsSync(socket)).toBe(false);
    } finally {
      removeDir(dir);
    }
  });

  test("SIGUSR1 flushes every device and keeps serving", async () => {
    const daemon = await startDaemon({ devType: "file", size: "64MiB" });
    try {
      await run(["qemu-io", "-f", "raw", daemon.uri, "-c", "write -P 0x42 0 1M"]);
      daemon.proc.kill("SIGUSR1");
      const deadline = Date.now() + 5000;
      while (!daemon.stderr().includes("flush done") && Date.now() < deadline) await Bun.sleep(20);
      expect(daemon.stderr()).toContain("flush done");
      await run(["qemu-io", "-f", "raw", daemon.uri, "-c", "read -P 0x42 0 1M"]);
    } finally {
      await daemon.stop();
    }
  });

  test("TCP export on an OS-chosen port prints a working nbd:// URI", async () => {
    const proc = Bun.spawn([...CLI, "--headless", "--store-size=64MiB", "--listen", "tcp:127.0.0.1:0"], { stdout: "pipe", stderr: "pipe" });
    const reader = proc.stdout.getReader();
    let out = "";
    while (!/URI:\s+\S+/.test(out)) out += new TextDecoder().decode((await reader.read()).value);
    const uri = /URI:\s+(\S+)/.exec(out)![1]!;
    expect(uri).toMatch(/^nbd:\/\/127\.0\.0\.1:[1-9]\d*\/usbd$/);
    expect((await run(["nbdinfo", "--size", uri])).trim()).toBe(String(64 * 1024 * 1024));
    proc.kill("SIGTERM");
    expect(await proc.exited).toBe(0);
  });

  test("reopening a file store with a different --store-size fails clearly (exit 1) and keeps the file", async () => {
    const dir = tempDir("resize");
    try {
      writeFileSync(join(dir, "usbd.img"), new Uint8Array(1024 * 1024));
      const r = await runResult([...CLI, "--headless", "--dev-type=file", `--store-dir=${dir}`, "--store-size=2MiB", "--listen", `unix:${join(dir, "s.sock")}`]);
      expect(r.exitCode).toBe(1);
      expect(r.stderr).toContain("refusing to resize");
      expect(Bun.file(join(dir, "usbd.img")).size).toBe(1024 * 1024);
    } finally {
      removeDir(dir);
    }
  });
});

describe("file stores", () => {
  test("a new file store without --store-size gets the default 1 GiB; reopening keeps its size", async () => {
    const dir = tempDir("default-size");
    try {
      const first = await startDaemon({ devType: "file", storeDir: dir, size: "" });
      expect((await run(["nbdinfo", "--size", first.uri])).trim()).toBe(String(1024 ** 3));
      await first.stop();
      expect(Bun.file(join(dir, "usbd.img")).size).toBe(1024 ** 3);
    } finally {
      removeDir(dir);
    }
  });
});
