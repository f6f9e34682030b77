/**
 * Shared helpers for the real-client suites: start the usbd-tui daemon (or, with USBD_TEST_SERVER=nbdkit, nbdkit
 * as a control that proves a test itself is sound) on a temporary Unix socket, run client commands with failure
 * messages that carry their stderr, and name the binaries a suite needs so it can skip with a reason.
 */
import { existsSync, mkdtempSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { Subprocess } from "bun";
import { waitFor, watch } from "../helpers/process.ts";

const ROOT = resolve(import.meta.dir, "../..");
const BUN = join(ROOT, "node_modules/.bin/bun");
const CLI = join(ROOT, "bin/usbd-tui.ts");
const READY_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 20_000;

/** Which server the suites drive: the daemon, or nbdkit as a control for the tests themselves. */
export const SERVER: "usbd" | "nbdkit" = process.env.USBD_TEST_SERVER === "nbdkit" ? "nbdkit" : "usbd";

export type DevType = "mem" | "file" | "dedup" | "objstore";

export interface DaemonOptions {
  readonly devType: DevType;
  /** Device size in the CLI's spelling, default "1GiB"; "" passes no --store-size at all. */
  readonly size?: string;
  /** Where the file device keeps `<storeName>.img`; a fresh temporary directory (removed at stop) when absent. */
  readonly storeDir?: string;
  readonly storeName?: string;
  readonly exportName?: string;
  /** Passes `--json --stats-interval N`, so stdout carries JSON stats lines and a final totals line. */
  readonly statsIntervalS?: number;
  /** Further daemon flags, e.g. the dedup device's `--dedup-compress=none` (nbdkit, the control, ignores them). */
  readonly extraArgs?: readonly string[];
  /**
   * A command the daemon runs under, which must exec it (so the pid stays the daemon's): `prlimit --nofile=N:N`, or
   * `sh -c 'umask 000; exec "$@"' sh`.
   */
  readonly prefix?: readonly string[];
}

export interface Daemon {
  /** The URI the daemon printed (`nbd+unix:///NAME?socket=PATH`). */
  readonly uri: string;
  readonly socket: string;
  readonly storeDir: string;
  readonly proc: Subprocess<"ignore", "pipe", "pipe">;
  /** Everything the daemon wrote to stdout / stderr so far. */
  stdout(): string;
  stderr(): string;
  /** SIGTERM, wait for exit, assert exit code 0 (the error carries stderr); returns the whole stdout. */
  stop(): Promise<string>;
  /** SIGKILL if still running; for afterAll cleanup after a failure. Never throws. */
  kill(): void;
}

export interface RunResult {
  readonly stdout: string;
  readonly stderr: string;
  readonly exitCode: number;
}

export interface RunOptions {
  readonly timeoutMs?: number;
  readonly env?: Record<string, string>;
  readonly cwd?: string;
}

/** Runs a command to completion and returns its output and exit code, whatever the code. */
export async function runResult(cmd: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const proc = Bun.spawn([...cmd], {
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
    cwd: opts.cwd,
    env: { ...process.env, ...opts.env },
  });
  const timeoutMs = opts.timeoutMs ?? 120_000;
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    proc.kill("SIGKILL");
  }, timeoutMs);
  const [stdout, stderr, exitCode] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ]);
  clearTimeout(timer);
  if (timedOut) throw new Error(`${show(cmd)} did not finish within ${timeoutMs} ms; stderr:\n${stderr}`);
  return { stdout, stderr, exitCode };
}

/** Runs a command and returns its stdout; throws, naming the command, exit code and stderr, unless it exits 0. */
export async function run(cmd: readonly string[], opts: RunOptions = {}): Promise<string> {
  const r = await runResult(cmd, opts);
  if (r.exitCode !== 0) {
    throw new Error(
      `${show(cmd)} exited with ${r.exitCode}\n--- stderr ---\n${r.stderr.trim()}\n--- stdout ---\n${r.stdout.trim().slice(-4000)}`,
    );
  }
  return r.stdout;
}

function show(cmd: readonly string[]): string {
  return `\`${cmd.join(" ")}\``;
}

/** The binaries among `names` that are not on the PATH (sbin included). */
export function missingBinaries(names: readonly string[]): string[] {
  const path = `${process.env.PATH ?? ""}:/usr/sbin:/sbin`;
  return names.filter((n) => Bun.which(n, { PATH: path }) === null);
}

/**
 * The reason a suite must skip, or undefined when it can run: a required binary is missing. Logs the reason, so a
 * skipped suite says why in the test output.
 */
export function skipReason(suite: string, binaries: readonly string[]): string | undefined {
  const missing = missingBinaries(binaries);
  if (missing.length === 0) return undefined;
  const reason = `${suite}: skipped, missing ${missing.join(", ")} (run scripts/install-deps.sh)`;
  console.warn(reason);
  return reason;
}

/** A fresh directory under the system temp dir (short, so socket paths stay under the 108-byte limit). */
export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `usbd-${prefix}-`));
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

/** afterAll cleanup: stops the daemon cleanly (asserting exit 0), kills it if that failed, removes `dir`. */
export async function stopAndRemove(daemon: Daemon | undefined, dir: string): Promise<void> {
  try {
    await daemon?.stop();
  } finally {
    daemon?.kill();
    removeDir(dir);
  }
}

/** Starts the server described by `opts` on a fresh Unix socket and waits until it is ready for clients. */
export async function startDaemon(opts: DaemonOptions): Promise<Daemon> {
  const ownStore = opts.storeDir === undefined;
  const storeDir = opts.storeDir ?? tempDir("store");
  const storeName = opts.storeName ?? "usbd";
  const size = opts.size ?? "1GiB";
  const sockDir = tempDir("sock");
  const socket = join(sockDir, "nbd.sock");
  const cmd = SERVER === "nbdkit" ? nbdkitCommand(opts, storeDir, storeName, size, socket) : usbdCommand(opts, storeDir, storeName, size, socket);
  const w = watch(cmd, { cwd: ROOT });
  let uri: string;
  try {
    uri = await waitFor("\"URI:\" line on stdout and a socket", w, () => readyUri(w.stdout(), socket, opts.exportName ?? storeName), READY_TIMEOUT_MS);
  } catch (error) {
    await w.stop("SIGKILL", 0);
    cleanup();
    throw error;
  }

  let stopped = false;
  function cleanup(): void {
    rmSync(sockDir, { recursive: true, force: true });
    if (ownStore) rmSync(storeDir, { recursive: true, force: true });
  }
  return {
    uri,
    socket,
    storeDir,
    proc: w.proc,
    stdout: w.stdout,
    stderr: w.stderr,
    async stop() {
      if (stopped) throw new Error("daemon already stopped");
      stopped = true;
      const code = await w.stop("SIGTERM", STOP_TIMEOUT_MS);
      cleanup();
      const signal = w.proc.signalCode;
      if (code !== 0 || signal !== null) {
        throw new Error(
          `server did not exit cleanly on SIGTERM: exit code ${code}, signal ${signal ?? "none"}` +
            `${code === 137 || signal === "SIGKILL" ? ` (killed after ${STOP_TIMEOUT_MS} ms)` : ""}\n--- stderr ---\n${w.stderr().trim()}`,
        );
      }
      return w.stdout();
    },
    kill() {
      stopped = true;
      w.kill();
      cleanup();
    },
  };
}

function usbdCommand(opts: DaemonOptions, storeDir: string, storeName: string, size: string, socket: string): string[] {
  const cmd = [
    ...(opts.prefix ?? []),
    BUN,
    CLI,
    "--headless",
    `--dev-type=${opts.devType}`,
    ...(size === "" ? [] : [`--store-size=${size}`]),
    `--store-dir=${storeDir}`,
    `--store-name=${storeName}`,
    "--listen",
    `unix:${socket}`,
  ];
  if (opts.exportName !== undefined) cmd.push("--export-name", opts.exportName);
  if (opts.statsIntervalS !== undefined) cmd.push("--json", "--stats-interval", String(opts.statsIntervalS));
  cmd.push(...(opts.extraArgs ?? []));
  return cmd;
}

function nbdkitCommand(opts: DaemonOptions, storeDir: string, storeName: string, size: string, socket: string): string[] {
  const base = ["nbdkit", "-f", "-U", socket, "-e", opts.exportName ?? storeName];
  if (opts.devType === "mem") return [...base, "memory", nbdkitSize(size)];
  const image = join(storeDir, `${storeName}.img`);
  if (!existsSync(image)) {
    writeFileSync(image, "");
    truncateSync(image, sizeBytes(size));
  }
  return [...base, "file", image];
}

function nbdkitSize(size: string): string {
  return String(sizeBytes(size));
}

/** Parses the sizes these suites use ("64MiB", "1GiB"). */
export function sizeBytes(size: string): number {
  const m = /^(\d+)\s*(KiB|MiB|GiB)?$/.exec(size);
  if (!m) throw new Error(`test helper cannot parse size "${size}"`);
  const unit = { KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3 }[m[2] ?? ""] ?? 1;
  return Number(m[1]) * unit;
}

/** The URI the server printed, once its socket exists (nbdkit prints none: build the one the daemon would). */
function readyUri(stdout: string, socket: string, exportName: string): string | undefined {
  if (!existsSync(socket)) return undefined;
  const m = /^\s*URI:\s+(\S+)/m.exec(stdout);
  if (m) return m[1]!;
  // With --json the banner is a JSON line of its own.
  const json = /^\{"type":"serving".*"uri":"([^"]+)"/m.exec(stdout);
  if (json) return json[1]!;
  return SERVER === "nbdkit" ? `nbd+unix:///${encodeURIComponent(exportName)}?socket=${socket}` : undefined;
}

/** Writes `bytes` random bytes to `path` and returns its sha256 in hex. */
export async function writeRandomFile(path: string, bytes: number): Promise<string> {
  const data = new Uint8Array(bytes);
  for (let off = 0; off < bytes; off += 65536) crypto.getRandomValues(data.subarray(off, Math.min(bytes, off + 65536)));
  await Bun.write(path, data);
  return sha256(data);
}

export function sha256(data: Uint8Array): string {
  return new Bun.CryptoHasher("sha256").update(data).digest("hex");
}

/** The sha256 of a file, or of its first `length` bytes. */
export async function sha256File(path: string, length?: number): Promise<string> {
  const hasher = new Bun.CryptoHasher("sha256");
  const file = Bun.file(path);
  for await (const chunk of (length === undefined ? file : file.slice(0, length)).stream()) hasher.update(chunk);
  return hasher.digest("hex");
}

/** The device kinds every client suite runs against. */
export const DEV_TYPES: readonly DevType[] = ["mem", "file"];
