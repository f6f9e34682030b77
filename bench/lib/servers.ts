/**
 * The servers under test: usbd-tui (mem and file devices) and the nbdkit peers (memory and file plugins).
 * Each starts fresh (new socket, new image), is pinned by a taskset prefix when the CPU policy says so, and is
 * stopped with SIGTERM (SIGKILL after a grace period, which is then reported).
 */
import { existsSync, mkdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { run } from "./sys.ts";

export type DeviceKind = "mem" | "file";
export type ServerName = "usbd-mem" | "nbdkit-memory" | "usbd-file" | "nbdkit-file";

/** A device kind's pair: the server we develop and the peer it is compared with. */
export const PAIRS: Record<DeviceKind, { usbd: ServerName; peer: ServerName }> = {
  mem: { usbd: "usbd-mem", peer: "nbdkit-memory" },
  file: { usbd: "usbd-file", peer: "nbdkit-file" },
};

export interface StartOptions {
  readonly repo: string;
  /** Scratch directory for sockets, images and logs of this round. */
  readonly dir: string;
  readonly sizeBytes: number;
  /** Command prefix that applies the CPU policy to the server (e.g. ["taskset", "-c", "0"]), or []. */
  readonly pin: readonly string[];
  readonly bun: string;
  /** A/A mode: nbdkit stands in for usbd-tui (same plugin as the peer), to measure the harness's own noise. */
  readonly standIn?: boolean;
}

export interface RunningServer {
  readonly name: ServerName;
  readonly pid: number;
  readonly uri: string;
  readonly log: string;
  readonly command: string[];
  /** SIGTERM, then SIGKILL after `graceMs`; resolves to how it ended. */
  stop(graceMs?: number): Promise<{ clean: boolean; exitCode: number | null; signal: string | null }>;
}

function sizeForUsbd(bytes: number): string {
  const MiB = 1024 * 1024;
  if (bytes % (1024 * MiB) === 0) return `${bytes / (1024 * MiB)}GiB`;
  if (bytes % MiB === 0) return `${bytes / MiB}MiB`;
  return String(bytes);
}

function commandFor(name: ServerName, o: StartOptions, sock: string): { cmd: string[]; uriFromStdout: boolean } {
  const size = o.sizeBytes;
  if (o.standIn && name === "usbd-mem") return commandFor("nbdkit-memory", o, sock);
  if (o.standIn && name === "usbd-file") {
    const image = join(o.dir, "usbd-file.img");
    rmSync(image, { force: true });
    writeFileSync(image, "");
    truncateSync(image, size);
    return { cmd: ["nbdkit", "-f", "--exit-with-parent", "-U", sock, "file", image], uriFromStdout: false };
  }
  switch (name) {
    case "usbd-mem":
      return {
        cmd: [o.bun, join(o.repo, "bin/usbd-tui.ts"), "--headless", "--dev-type=mem", `--store-size=${sizeForUsbd(size)}`,
          "--listen", `unix:${sock}`],
        uriFromStdout: true,
      };
    case "usbd-file": {
      const store = join(o.dir, "usbd-file");
      mkdirSync(store, { recursive: true });
      rmSync(join(store, "bench.img"), { force: true });
      return {
        cmd: [o.bun, join(o.repo, "bin/usbd-tui.ts"), "--headless", "--dev-type=file", `--store-size=${sizeForUsbd(size)}`,
          `--store-dir=${store}`, "--store-name=bench", "--listen", `unix:${sock}`],
        uriFromStdout: true,
      };
    }
    case "nbdkit-memory":
      // -f: stay in the foreground so the pid we measure is the server; --exit-with-parent: no orphans.
      return { cmd: ["nbdkit", "-f", "--exit-with-parent", "-U", sock, "memory", String(size)], uriFromStdout: false };
    case "nbdkit-file": {
      const image = join(o.dir, "nbdkit-file.img");
      rmSync(image, { force: true });
      writeFileSync(image, ""); // a sparse image of the export's size, like usbd-tui's file device creates
      truncateSync(image, size);
      return { cmd: ["nbdkit", "-f", "--exit-with-parent", "-U", sock, "file", image], uriFromStdout: false };
    }
  }
}

const URI_LINE = /^\s*URI:\s+(\S+)/m;

/** Starts a server and resolves once an NBD client can read its size. */
export async function startServer(name: ServerName, o: StartOptions, readyTimeoutMs = 30_000): Promise<RunningServer> {
  mkdirSync(o.dir, { recursive: true });
  const sock = join(o.dir, `${name}.sock`);
  rmSync(sock, { force: true });
  const log = join(o.dir, `${name}.log`);
  const { cmd, uriFromStdout } = commandFor(name, o, sock);
  const command = [...o.pin, ...cmd];
  // Output goes to a file, not a pipe: the harness must stay idle while jobs run, and a full pipe would stall
  // the server.
  const proc = Bun.spawn(command, {
    cwd: o.repo,
    stdin: "ignore",
    stdout: Bun.file(log),
    stderr: Bun.file(`${log}.err`),
  });
  let exited: { code: number | null; signal: string | null } | undefined;
  const exitedPromise = proc.exited.then(() => {
    exited = { code: proc.exitCode, signal: proc.signalCode == null ? null : String(proc.signalCode) };
  });

  const deadline = performance.now() + readyTimeoutMs;
  let uri = uriFromStdout ? "" : `nbd+unix:///?socket=${sock}`;
  const failure = (why: string): Error => {
    try {
      proc.kill("SIGKILL");
    } catch {}
    const tail = (p: string): string => (existsSync(p) ? readFileSync(p, "utf8").trim().split("\n").slice(-8).join("\n") : "");
    return new Error(`${name}: ${why}\n  command: ${command.join(" ")}\n  stdout: ${tail(log)}\n  stderr: ${tail(`${log}.err`)}`);
  };
  while (uri === "") {
    if (exited) throw failure(`exited (code ${exited.code}, signal ${exited.signal}) before printing its URI line`);
    if (performance.now() > deadline) throw failure(`no "URI: ..." line on stdout within ${readyTimeoutMs} ms`);
    const out = existsSync(log) ? readFileSync(log, "utf8") : "";
    uri = URI_LINE.exec(out)?.[1] ?? "";
    if (uri === "") await Bun.sleep(50);
  }
  for (;;) {
    if (exited) throw failure(`exited (code ${exited.code}, signal ${exited.signal}) during start-up`);
    const probe = await run(["nbdinfo", "--size", uri]);
    if (probe.code === 0) {
      const size = Number(probe.stdout.trim());
      if (size !== o.sizeBytes) throw failure(`exports ${size} bytes, expected ${o.sizeBytes}`);
      break;
    }
    if (performance.now() > deadline) throw failure(`not answering NBD on ${uri}: ${probe.stderr.trim()}`);
    await Bun.sleep(50);
  }

  return {
    name,
    pid: proc.pid,
    uri,
    log,
    command,
    async stop(graceMs = 10_000) {
      if (!exited) {
        proc.kill("SIGTERM");
        const timer = new Promise<"timeout">((r) => setTimeout(() => r("timeout"), graceMs));
        if ((await Promise.race([exitedPromise, timer])) === "timeout") {
          proc.kill("SIGKILL");
          await exitedPromise;
          rmSync(sock, { force: true });
          return { clean: false, exitCode: proc.exitCode, signal: "SIGKILL (did not stop on SIGTERM)" };
        }
      }
      rmSync(sock, { force: true });
      const e = exited!;
      // nbdkit exits 0 on SIGTERM; usbd-tui should too. Dying by the signal itself is not a clean stop.
      return { clean: e.code === 0, exitCode: e.code, signal: e.signal };
    },
  };
}

/** `nbdinfo --json` of a running server (export flags: multi-conn, structured replies, block size...). */
export async function describe(uri: string): Promise<unknown> {
  const r = await run(["nbdinfo", "--json", uri]);
  if (r.code !== 0) return { error: r.stderr.trim() };
  try {
    return JSON.parse(r.stdout);
  } catch {
    return { raw: r.stdout };
  }
}
