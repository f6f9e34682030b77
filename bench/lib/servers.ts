/**
 * The servers under test: usbd-tui (mem, file, dedup and objstore devices) and the servers they are compared with
 * (nbdkit's memory and file plugins; for the dedup device also usbd-tui's own mem device, for the objstore device
 * usbd-tui's own file device). Each starts fresh (new socket, new image or store), is pinned by a taskset prefix when
 * the CPU policy says so, and is stopped with SIGTERM (SIGKILL after a grace period, which is then reported).
 */
import { existsSync, mkdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { run } from "./sys.ts";

export type DeviceKind = "mem" | "file" | "dedup" | "objstore";
export const DEVICE_KINDS: readonly DeviceKind[] = ["mem", "file", "dedup", "objstore"];
type UsbdServer = "usbd-mem" | "usbd-file" | "usbd-dedup" | "usbd-objstore";
/** A server of the run: `NAME@base` is usbd-tui's NAME started from the baseline revision (bench --baseline). */
export type ServerName = UsbdServer | "nbdkit-memory" | "nbdkit-file" | `${UsbdServer}@base`;

/** A device kind's usbd-tui server and the peers it is compared with. */
export interface Group {
  readonly usbd: ServerName;
  readonly peers: readonly ServerName[];
}

/**
 * A device kind's group: the usbd-tui device under test and the peers it is compared with, in the same round, one
 * ratio per peer. The dedup device is compared with usbd-tui's own mem device (the issue's yardstick) and with
 * nbdkit's memory plugin; the objstore device (reads from a warm local cache) with usbd-tui's own file device (the
 * issue's yardstick) and nbdkit's file plugin.
 */
export const GROUPS: Readonly<Record<DeviceKind, Group>> = {
  mem: { usbd: "usbd-mem", peers: ["nbdkit-memory"] },
  file: { usbd: "usbd-file", peers: ["nbdkit-file"] },
  dedup: { usbd: "usbd-dedup", peers: ["usbd-mem", "nbdkit-memory"] },
  objstore: { usbd: "usbd-objstore", peers: ["usbd-file", "nbdkit-file"] },
};

/**
 * The groups of a run that also measures a baseline revision: each usbd-tui device's own build from that revision
 * comes first among its peers, so every round gives a paired ratio against the same device's older code.
 */
export function groupsWithBaseline(): Readonly<Record<DeviceKind, Group>> {
  const out = {} as Record<DeviceKind, Group>;
  for (const kind of DEVICE_KINDS) {
    const { usbd, peers } = GROUPS[kind];
    out[kind] = { usbd, peers: [`${usbd as UsbdServer}@base`, ...peers] };
  }
  return out;
}

const BASE_SUFFIX = "@base";

/** How the dedup device stores new blocks (its --dedup-compress). */
export type DedupCompress = "lz4" | "none";

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
  /** --dedup-compress for usbd-dedup (default: the device's own default, lz4). */
  readonly dedupCompress?: DedupCompress;
  /** usbd-objstore's `--objstore-cfg` (inline JSON: the round's s3rver); required to start usbd-objstore. */
  readonly objstoreCfg?: string;
  /** Extra --objstore-* flags for usbd-objstore (e.g. --objstore-objsize=1MiB). */
  readonly objstoreArgs?: readonly string[];
  /**
   * TLS for every server: this --tls-certificates directory, with --tls require (usbd-tui) or --tls=require
   * (nbdkit). Clients use nbds+unix:// URIs with tls-verify-peer=false: fio's nbd engine refuses tls-certificates=
   * in a URI (libnbd's local-file rule), so no client checks the certificate, alike for every server; the
   * encryption is the same.
   */
  readonly tls?: string;
  /** Where the baseline revision's bin/ and src/ are (bench --baseline): the root `NAME@base` servers run from. */
  readonly baselineRepo?: string;
  /** usbd-tui's --store-name (default "bench"); the baseline's differs, as its objstore volume shares the s3rver. */
  readonly storeName?: string;
}

/** `launch` with TLS required, as each server spells it. */
function withTls(launch: Launch, dir: string, sock: string): Launch {
  if (launch.cmd[0] === "nbdkit") {
    return { ...launch, cmd: ["nbdkit", "--tls=require", `--tls-certificates=${dir}`, ...launch.cmd.slice(1)], tlsUri: `nbds+unix:///?socket=${sock}&tls-verify-peer=false` };
  }
  return { ...launch, cmd: [...launch.cmd, "--tls", "require", "--tls-certificates", dir] };
}

/** A device's gauges by name (e.g. "unique blocks", "dedup ratio"), from one JSON stats line of usbd-tui. */
export type Gauges = Record<string, number>;

export interface RunningServer {
  readonly name: ServerName;
  readonly pid: number;
  readonly uri: string;
  readonly log: string;
  readonly command: string[];
  /** Where the server keeps the export's data on disk (an image file or a store directory), if anywhere. */
  readonly store?: string;
  /**
   * For a server that prints JSON stats lines (usbd-dedup, usbd-objstore): the gauges of the first stats line stamped at or after
   * `sinceMs` (epoch ms), waiting up to `timeoutMs` for it; undefined when none came.
   */
  gauges?(sinceMs: number, timeoutMs?: number): Promise<Gauges | undefined>;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves to how it ended. */
  stop(graceMs?: number): Promise<{ clean: boolean; exitCode: number | null; signal: string | null }>;
}

function sizeForUsbd(bytes: number): string {
  const MiB = 1024 * 1024;
  if (bytes % (1024 * MiB) === 0) return `${bytes / (1024 * MiB)}GiB`;
  if (bytes % MiB === 0) return `${bytes / MiB}MiB`;
  return String(bytes);
}

interface Launch {
  readonly cmd: string[];
  readonly uriFromStdout: boolean;
  readonly store?: string;
  /** Prints a JSON stats line every second (--json --stats-interval=1), read back by RunningServer.gauges. */
  readonly stats?: true;
  /** The URI of a server that prints none, when it differs from the plain-text one (TLS). */
  readonly tlsUri?: string;
}

/** Seconds between usbd-dedup's and usbd-objstore's JSON stats lines: how stale the gauges after a job can be. */
const STATS_INTERVAL_S = 1;

function commandFor(name: ServerName, o: StartOptions, sock: string): Launch {
  if (name.endsWith(BASE_SUFFIX)) {
    if (o.baselineRepo === undefined) throw new Error(`${name} needs a baseline revision (--baseline)`);
    // Its own directory, so that its image or store never meets the current build's.
    const own = name.slice(0, -BASE_SUFFIX.length) as UsbdServer;
    return commandFor(own, { ...o, repo: o.baselineRepo, dir: join(o.dir, "base"), storeName: "bench-base" }, sock);
  }
  const size = o.sizeBytes;
  if (o.standIn && (name === "usbd-mem" || name === "usbd-dedup")) return commandFor("nbdkit-memory", o, sock);
  if (o.standIn && (name === "usbd-file" || name === "usbd-objstore")) {
    const image = join(o.dir, `${name}.img`);
    rmSync(image, { force: true });
    writeFileSync(image, "");
    truncateSync(image, size);
    return { cmd: ["nbdkit", "-f", "--exit-with-parent", "-U", sock, "file", image], uriFromStdout: false, store: image };
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
          `--store-dir=${store}`, `--store-name=${o.storeName ?? "bench"}`, "--listen", `unix:${sock}`],
        uriFromStdout: true,
        store,
      };
    }
    case "usbd-dedup": {
      // A new, empty store each round, in the scratch directory (tmpfs by default), removed after the round.
      const store = join(o.dir, "usbd-dedup");
      rmSync(store, { recursive: true, force: true });
      mkdirSync(store, { recursive: true });
      return {
        cmd: [o.bun, join(o.repo, "bin/usbd-tui.ts"), "--headless", "--dev-type=dedup", `--store-size=${sizeForUsbd(size)}`,
          `--store-dir=${store}`, `--store-name=${o.storeName ?? "bench"}`, ...(o.dedupCompress ? [`--dedup-compress=${o.dedupCompress}`] : []),
          "--json", `--stats-interval=${STATS_INTERVAL_S}`, "--listen", `unix:${sock}`],
        uriFromStdout: true,
        store,
        stats: true,
      };
    }
    case "usbd-objstore": {
      // A new volume each round: an empty cache directory here, and a fresh bucket in the round's own s3rver (started
      // by the harness, its data in the scratch directory too). The cache is unbounded (--objstore-diskcache 0, the
      // default), so every segment the prefill writes stays cached; --objstore-flush-mode=remote makes the prefill's
      // closing FLUSH wait until the store has every segment, so no upload runs during the timed jobs.
      if (o.objstoreCfg === undefined) throw new Error("usbd-objstore needs the round's s3rver (objstoreCfg)");
      const store = join(o.dir, "usbd-objstore");
      rmSync(store, { recursive: true, force: true });
      mkdirSync(store, { recursive: true });
      return {
        cmd: [o.bun, join(o.repo, "bin/usbd-tui.ts"), "--headless", "--dev-type=objstore", `--store-size=${sizeForUsbd(size)}`,
          `--store-dir=${store}`, `--store-name=${o.storeName ?? "bench"}`, "--objstore-kind=s3", `--objstore-cfg=${o.objstoreCfg}`,
          "--objstore-flush-mode=remote", ...(o.objstoreArgs ?? []),
          "--json", `--stats-interval=${STATS_INTERVAL_S}`, "--listen", `unix:${sock}`],
        uriFromStdout: true,
        store,
        stats: true,
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
      return { cmd: ["nbdkit", "-f", "--exit-with-parent", "-U", sock, "file", image], uriFromStdout: false, store: image };
    }
    default:
      throw new Error(`unknown server ${name}`);
  }
}

const URI_LINE = /^\s*URI:\s+(\S+)/m;
/** Under --json (issue 16) usbd-tui prints no URI line; its JSON stats lines carry the URI as servedAt. */
const SERVED_AT = /"servedAt":"([^"]+)"/;

/** Starts a server and resolves once an NBD client can read its size. */
export async function startServer(name: ServerName, o: StartOptions, readyTimeoutMs = 30_000): Promise<RunningServer> {
  mkdirSync(o.dir, { recursive: true });
  const sock = join(o.dir, `${name}.sock`);
  rmSync(sock, { force: true });
  const log = join(o.dir, `${name}.log`);
  const plain = commandFor(name, o, sock);
  const { cmd, uriFromStdout, store, stats, tlsUri } = o.tls === undefined ? plain : withTls(plain, o.tls, sock);
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
  let uri = uriFromStdout ? "" : (tlsUri ?? `nbd+unix:///?socket=${sock}`);
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
    uri = (URI_LINE.exec(out)?.[1] ?? SERVED_AT.exec(out)?.[1] ?? "").replace(/tls-certificates=[^&]*/, "tls-verify-peer=false");
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
    store,
    gauges: stats ? (sinceMs, timeoutMs = (STATS_INTERVAL_S + 2) * 1000) => gaugesFromLog(log, sinceMs, timeoutMs) : undefined,
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

interface StatsLine {
  readonly type: string;
  readonly time: number;
  readonly gauges?: ReadonlyArray<{ readonly name: string; readonly value: number }>;
}

function isStatsLine(v: unknown): v is StatsLine {
  return typeof v === "object" && v !== null && "type" in v && v.type === "stats" && "time" in v && typeof v.time === "number";
}

/** The gauges of the first JSON stats line in `log` stamped at or after `sinceMs`, polling until `timeoutMs`. */
async function gaugesFromLog(log: string, sinceMs: number, timeoutMs: number): Promise<Gauges | undefined> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const lines = existsSync(log) ? readFileSync(log, "utf8").split("\n") : [];
    for (const line of lines) {
      if (!line.startsWith('{"type":"stats"')) continue;
      let parsed: unknown;
      try {
        parsed = JSON.parse(line);
      } catch {
        continue; // a line still being written
      }
      if (isStatsLine(parsed) && parsed.time >= sinceMs) {
        return Object.fromEntries((parsed.gauges ?? []).map((g) => [g.name, g.value]));
      }
    }
    if (performance.now() > deadline) return undefined;
    await Bun.sleep(100);
  }
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
