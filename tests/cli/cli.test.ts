// The usbd-tui command as users run it: exit codes, the kernel-less message, signals, TCP, socket hygiene, and the
// objstore kind's mistakes (exit 2) and failures (exit 1) without a secret in any message.
import { describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { removeDir, run, runResult, startDaemon, tempDir } from "../clients/helpers.ts";
import { s3ServerConfigJson, startS3Server } from "../helpers/s3-server.ts";

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

  test("an unusable --store-dir is one line naming the flag and the fix (exit 2): empty, a file in the way, not writable", async () => {
    const dir = tempDir("storedir");
    try {
      const file = join(dir, "a-file");
      writeFileSync(file, "x");
      const readOnly = join(dir, "read-only");
      mkdirSync(readOnly, { mode: 0o500 });
      const cases: Array<[string[], string]> = [
        [["--store-dir="], "--store-dir is empty"],
        [[`--store-dir=${join(file, "sub")}`], "cannot be created (a file is in the way)"],
        [[`--store-dir=${file}`], "is not a directory"],
      ];
      // Root writes anywhere: the permission case only means something for another user.
      const asNobody = process.getuid?.() === 0 && Bun.which("setpriv") !== null ? ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] : [];
      for (const [args, message] of cases) {
        const r = await runResult([...CLI, "--headless", "--dev-type=file", "--listen", `unix:${join(dir, "s.sock")}`, ...args]);
        expect({ args, exit: r.exitCode }).toEqual({ args, exit: 2 });
        expect(r.stderr).toContain(message);
        expect(r.stderr).toContain("give --store-dir a directory this user can write");
        expect(r.stderr.trim().split("\n").length).toBe(1);
      }
      if (asNobody.length > 0) {
        const r = await runResult([...asNobody, ...CLI, "--headless", "--dev-type=file", "--listen", `unix:/tmp/usbd-nobody-${process.pid}.sock`, `--store-dir=${readOnly}`]);
        expect(r.exitCode).toBe(2);
        expect(r.stderr).toMatch(/--store-dir .* (is not writable by this user|cannot be created \(permission denied\))/);
      }
    } finally {
      removeDir(dir);
    }
  });

  test("engine limits: --max-buffer below 32MiB, --max-connections 0, --socket-group on TCP or unknown, an export name over 4096 bytes", async () => {
    const cases: Array<[string[], string]> = [
      [["--max-buffer=16MiB"], "--max-buffer must be at least 32MiB"],
      [["--max-connections=0"], "--max-connections must be at least 1"],
      [["--socket-group=daemon", "--listen", "tcp:127.0.0.1:0"], "--socket-group only applies to a Unix socket"],
      [["--socket-group=no-such-group-here", "--listen", "unix:/tmp/x.sock"], 'no group named "no-such-group-here"'],
      [[`--export-name=${"n".repeat(4097)}`, "--listen", "unix:/tmp/x.sock"], "NBD allows at most 4096"],
    ];
    for (const [args, message] of cases) {
      const r = await runResult([...CLI, "--headless", ...args]);
      expect(r.exitCode).toBe(2);
      expect(r.stderr).toContain(message);
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

describe("objstore: exit codes, and secrets kept out of every message", () => {
  /** s3rver checks the access key id but not the signature: any secret works, and this one must never be printed. */
  const SECRET = `cli-secret-${Buffer.from(crypto.getRandomValues(new Uint8Array(12))).toString("hex")}`;
  const randomKey = () => Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("hex");

  /** The CLI serving an objstore volume with its cache in `dir`, plus `args`. */
  function objstoreRun(dir: string, args: readonly string[]) {
    const cmd = [...CLI, "--headless", "--dev-type=objstore", `--store-dir=${dir}`, "--listen", `unix:${join(dir, "s.sock")}`, ...args];
    return runResult(cmd, { timeoutMs: 30_000 });
  }

  function expectNoSecrets(r: { stdout: string; stderr: string }, ...secrets: string[]): void {
    for (const secret of [SECRET, ...secrets]) {
      expect(r.stdout.includes(secret)).toBe(false);
      expect(r.stderr.includes(secret)).toBe(false);
    }
  }

  test("--objstore-kind=azure without its settings exits 2 naming them; an unknown kind is a usage error too", async () => {
    const dir = tempDir("objstore-kind");
    try {
      const azure = await objstoreRun(dir, ["--objstore-kind=azure"]);
      expect(azure.exitCode).toBe(2);
      expect(azure.stderr).toContain(`--objstore-kind=azure needs exactly one of "key"`);
      expect(azure.stderr.trim().split("\n").length).toBe(1);
      const unknown = await objstoreRun(dir, ["--objstore-kind=tape"]);
      expect(unknown.exitCode).toBe(2);
      expect(unknown.stderr).toContain('--objstore-kind takes one of s3, local');
    } finally {
      removeDir(dir);
    }
  });

  test("a malformed --objstore-cfg exits 2 naming the problem, and never prints the secret_key", async () => {
    const dir = tempDir("objstore-cfg");
    try {
      const malformed: [string, string][] = [
        [`{"access_key_id":"AK","secret_key":${SECRET}}`, "is not valid JSON"],
        [`{"access_key_id":"AK","secret_key":"${SECRET}",}`, "is not valid JSON"],
        [`{"access_key_id":"AK","secret_key":"${SECRET}"`, "is not valid JSON"],
        [`{"access_key_id":"AK","secret_access_key":"${SECRET}"}`, 'unknown key "secret_access_key" in --objstore-cfg (inline JSON) (did you mean "secret_key"?)'],
        [`{"secret_key":"${SECRET}"}`, "has only one of access_key_id and secret_key"],
        [`{"access_key_id":"AK","secret_key":"${SECRET}","bucket":7}`, '"bucket" in --objstore-cfg (inline JSON) must be a string, not a number'],
        [`{"access_key_id":"AK","secret_key":"${SECRET}","endpoint":"http://AK:${SECRET}@127.0.0.1:9000"}`, "must not hold credentials"],
        [`{"access_key_id":"AK","secret_key":"${SECRET}","path":"/tmp"}`, '"path" in --objstore-cfg is not used by --objstore-kind=s3'],
        [join(dir, "missing.json"), `cannot read --objstore-cfg file ${join(dir, "missing.json")}: ENOENT`],
      ];
      for (const [cfg, problem] of malformed) {
        const r = await objstoreRun(dir, ["--objstore-cfg", cfg]);
        expect(r.exitCode, cfg).toBe(2);
        expect(r.stderr, cfg).toContain(problem);
        expectNoSecrets(r);
      }
      // The file form reads the same JSON, and its messages keep the secret out just the same.
      const file = join(dir, "store.json");
      writeFileSync(file, `{"access_key_id": "AK", "secret_key": ${SECRET}}\n`);
      const fromFile = await objstoreRun(dir, ["--objstore-cfg", file]);
      expect(fromFile.exitCode).toBe(2);
      expect(fromFile.stderr).toContain(`--objstore-cfg file ${file} is not valid JSON`);
      expectNoSecrets(fromFile);
    } finally {
      removeDir(dir);
    }
  });

  test("a malformed --objstore-aeskey exits 2 without echoing the key", async () => {
    const dir = tempDir("objstore-key");
    try {
      const key = randomKey();
      for (const [spec, problem] of [
        [key, "--objstore-aeskey takes key:<hex|base64>, file:<path> or env:<VARIABLE>"],
        [`key:${key.slice(1)}`, "a hex key must be 64 digits (32 bytes); got 63 digits"],
        [`key:${key.slice(0, 60)}:-)`, "not a key: expected 64 hex digits, base64 of 32 bytes, or 32 characters taken as they are"],
      ] as const) {
        const r = await objstoreRun(dir, ["--objstore-kind=local", "--store-size=64MiB", "--objstore-aeskey", spec]);
        expect(r.exitCode, spec).toBe(2);
        expect(r.stderr).toContain(problem);
        expectNoSecrets(r, key.slice(0, 60));
      }
    } finally {
      removeDir(dir);
    }
  });

  test("an encrypted volume opened with another key exits 2 with \"wrong key\"; no key or secret is printed", async () => {
    const s3 = await startS3Server();
    const work = tempDir("objstore-wrong-key");
    try {
      const config = JSON.stringify({ ...(JSON.parse(s3ServerConfigJson(s3)) as object), secret_key: SECRET });
      const right = randomKey();
      const wrong = randomKey();
      const store = join(work, "created");
      mkdirSync(store);
      const daemon = await startDaemon({
        devType: "objstore",
        size: "64MiB",
        storeDir: store,
        extraArgs: ["--objstore-cfg", config, "--objstore-aeskey", `key:${right}`, "--objstore-aesmode=aes-gcm"],
      });
      await daemon.stop();
      expectNoSecrets({ stdout: daemon.stdout(), stderr: daemon.stderr() }, right);

      // Another machine (an empty --store-dir) with the wrong key, and the same machine with it.
      for (const dir of [join(work, "other"), store]) {
        const r = await objstoreRun(dir, ["--objstore-cfg", config, "--objstore-aeskey", `key:${wrong}`]);
        expect(r.exitCode).toBe(2);
        expect(r.stderr).toContain("wrong key for volume usbd");
        expectNoSecrets(r, right, wrong);
      }
    } finally {
      removeDir(work);
      await s3.cleanup();
    }
  });

  test("an unreachable endpoint exits 1 within seconds, naming the endpoint and not the secret", async () => {
    const dir = tempDir("objstore-down");
    try {
      const config = JSON.stringify({ access_key_id: "AK", secret_key: SECRET, endpoint: "http://127.0.0.1:1", region: "us-east-1", bucket: "usbd" });
      const started = Date.now();
      const r = await objstoreRun(dir, ["--objstore-cfg", config, "--store-size=64MiB"]);
      expect(Date.now() - started).toBeLessThan(10_000);
      expect(r.exitCode).toBe(1);
      expect(r.stderr).toContain("http://127.0.0.1:1");
      expectNoSecrets(r);
    } finally {
      removeDir(dir);
    }
  });
});
