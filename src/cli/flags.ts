/**
 * Command-line flags: the seed's names (`--dev-type`, `--store-size`, ...) in `--flag=value`, `--flag value` and
 * the Go original's single-dash spelling, parsed into one typed options object with every default applied.
 */
import { homedir } from "node:os";
import path from "node:path";
import { isDedupCompression, type DedupCompression } from "../devices/dedup/layout.ts";
import { parseMetricsAddress } from "../app/metrics/endpoint.ts";
import { OBJSTORE_FLAGS, parseObjstoreFlags, type ObjstoreCliOptions } from "./objstore-flags.ts";
import { ACCESS_FLAGS, SHORT_FLAGS, parseAccessFlags, type AccessCliOptions } from "./access-flags.ts";
import { DEFAULT_MAX_CONNECTIONS } from "../engine/accept-guard.ts";
import { DEFAULT_MEMORY_LIMIT, MIN_MEMORY_LIMIT } from "../engine/memory-budget.ts";
import { MAX_STRING_SIZE } from "../engine/protocol/constants.ts";
import { groupId } from "./groups.ts";
import { formatSize } from "../shared/format-size.ts";
import { parseSize } from "./sizes.ts";

/** A mistake on the command line: the CLI prints it with a hint and exits 2. */
export class UsageError extends Error {}

type FlagType = "boolean" | "string" | "size" | "integer" | "seconds";

interface FlagSpec {
  readonly type: FlagType;
  readonly help: string;
  /** Shown in --help after the flag name. */
  readonly value?: string;
}

/** Every flag the CLI knows, in --help order. Kind-specific ones are read by the device kinds that use them. */
export const FLAGS = {
  headless: { type: "boolean", help: "run without the dashboard: log to stderr, stats to stdout" },
  listen: { type: "string", value: "ADDR", help: "serve over NBD on unix:/path/sock or tcp:HOST:PORT instead of the kernel" },
  config: { type: "string", value: "FILE", help: "several devices from a TOML file ([[device]] tables); flags given too override its top-level keys" },
  "export-name": { type: "string", value: "NAME", help: "NBD export name (default: the store name)" },
  "dev-type": { type: "string", value: "KIND", help: "device kind: mem (default), file, dedup or objstore" },
  "store-dir": { type: "string", value: "DIR", help: "where persistent devices keep their data" },
  "store-name": { type: "string", value: "NAME", help: "name of the store inside --store-dir (default usbd)" },
  "store-size": { type: "size", value: "SIZE", help: "device size, like 1GiB or 500M (default 1GiB)" },
  "block-size": { type: "size", value: "SIZE", help: "preferred block size advertised to clients (default 4KiB)" },
  "dedup-blocksize": { type: "size", value: "SIZE", help: "dedup: block size of a new store, 512 to 64KiB (default 4KiB)" },
  "dedup-compress": { type: "string", value: "ALG", help: "dedup: how new blocks are stored: lz4 (default) or none" },
  "dedup-memcache": { type: "size", value: "SIZE", help: "dedup: memory for cached map pages, index entries and blocks (default 256MiB)" },
  ...OBJSTORE_FLAGS,
  ...ACCESS_FLAGS,
  repair: { type: "boolean", help: "with `usbd-tui check`: fix what the check finds (refcounts, leaks, bad references)" },
  "nbd-max-devs": { type: "integer", value: "N", help: "nbds_max when loading the kernel nbd module (default 16)" },
  "nbd-interface": { type: "string", value: "IF", help: "kernel attach interface: netlink (default; ioctl when the kernel lacks it) or ioctl" },
  connections: { type: "integer", value: "N", help: "kernel sockets, one kernel queue and session each (default 1; >1 needs multi-conn)" },
  "nbd-timeout": { type: "seconds", value: "SECONDS", help: "kernel request timeout; a timed-out connection is replaced (default 0: never)" },
  "dead-conn-timeout": { type: "seconds", value: "SECONDS", help: "how long the kernel holds I/O for a restarted daemon to reattach (default 60)" },
  reattach: { type: "string", value: "/dev/nbdN", help: "take over a device a crashed daemon left attached to this store (automatic via <store>.nbd.json)" },
  force: { type: "boolean", help: "detach at shutdown even while the kernel device is mounted" },
  "max-buffer": { type: "size", value: "SIZE", help: "memory for request data and unsent replies, all clients together (default 256MiB, at least 32MiB)" },
  "max-connections": { type: "integer", value: "N", help: "network clients served at once; more are refused with a log line (default 128)" },
  "handshake-timeout": { type: "seconds", value: "SECONDS", help: "a network client must finish the NBD handshake within this (default 10; 0: no limit)" },
  "socket-group": { type: "string", value: "GROUP", help: "with --listen unix: this group may connect too (socket 0660; default 0600, owner only)" },
  "stats-interval": { type: "seconds", value: "SECONDS", help: "print a stats line every SECONDS in headless mode (0: off)" },
  json: { type: "boolean", help: "stats and logs as JSON lines" },
  "log-level": { type: "string", value: "LEVEL", help: "debug, info (default), warn or error" },
  "log-file": { type: "string", value: "FILE", help: "also append the log to FILE (with the dashboard, the only place info lines go)" },
  metrics: { type: "string", value: "tcp:HOST:PORT", help: "serve Prometheus metrics at http://HOST:PORT/metrics (host defaults to 127.0.0.1)" },
  run: { type: "string", value: "CMD", help: "serve, run CMD (sh -c) with $uri (or $nbd) set, then shut down and exit with its status" },
  "pid-file": { type: "string", value: "FILE", help: "write the daemon's pid to FILE once it serves; removed at exit" },
  control: { type: "string", value: "PATH|none", help: "the control socket for usbd-tui ctl and top (default /run/usbd-tui/NAME.PID.sock; none: no socket)" },
  help: { type: "boolean", help: "show this help" },
  version: { type: "boolean", help: "print the version" },
} as const satisfies Record<string, FlagSpec>;

export type FlagName = keyof typeof FLAGS;

/** Flags that only mean something when attaching to the kernel. */
const KERNEL_FLAGS: readonly FlagName[] = ["nbd-interface", "connections", "nbd-timeout", "dead-conn-timeout", "reattach", "force", "nbd-max-devs"];

export interface CliOptions {
  readonly headless: boolean;
  readonly listen: string | undefined;
  /** --config: the TOML file that lists the devices (see config.ts). */
  readonly config: string | undefined;
  readonly exportName: string;
  readonly devType: string;
  readonly storeDir: string;
  readonly storeName: string;
  readonly storeSize: number;
  /** Whether --store-size was given (persistent stores otherwise keep their own size). */
  readonly storeSizeGiven: boolean;
  readonly blockSize: number;
  readonly nbdMaxDevs: number;
  readonly nbdInterface: "netlink" | "ioctl";
  readonly connections: number;
  readonly nbdTimeout: number;
  readonly deadConnTimeout: number;
  readonly reattach: string | undefined;
  readonly force: boolean;
  readonly statsInterval: number;
  readonly json: boolean;
  readonly logLevel: "debug" | "info" | "warn" | "error";
  /** --max-buffer: the process-wide memory budget for client data (see src/engine/memory-budget.ts). */
  readonly maxBuffer: number;
  readonly maxConnections: number;
  /** --handshake-timeout in seconds; 0 for none. */
  readonly handshakeTimeout: number;
  /** --socket-group resolved to a gid. */
  readonly socketGroup: number | undefined;
  /** --log-file: where log lines also go (the dashboard owns the terminal, so it is the way to keep them). */
  readonly logFile: string | undefined;
  /** --control: the control socket's path, "none", or undefined for the default. */
  readonly control: string | undefined;
  /** --metrics: where /metrics is served. */
  readonly metrics: string | undefined;
  /** --pid-file: where the pid is written once serving. */
  readonly pidFile: string | undefined;
  /** --run: the command to run while serving (headless); the daemon exits with its status. */
  readonly run: string | undefined;
  readonly help: boolean;
  readonly version: boolean;
  /** --dedup-blocksize when given (an existing store otherwise keeps its own). */
  readonly dedupBlockSize: number | undefined;
  readonly dedupCompress: DedupCompression;
  readonly dedupMemcache: number;
  readonly repair: boolean;
  /** The --objstore-* flags. */
  readonly objstore: ObjstoreCliOptions;
  /** --read-only and the --tls* flags. */
  readonly access: AccessCliOptions;
  /** A positional /dev/nbdX naming the kernel device to use. */
  readonly nbdDevice: string | undefined;
}

type RawValue = string | boolean;

function defaultStoreDir(): string {
  if (process.getuid?.() === 0) return "/var/lib/usbd-tui";
  const xdg = process.env.XDG_DATA_HOME;
  return path.join(xdg && xdg !== "" ? xdg : path.join(homedir(), ".local", "share"), "usbd-tui");
}

function isFlag(name: string): name is FlagName {
  return Object.hasOwn(FLAGS, name);
}

/** Splits argv into flag values and positionals, accepting --x=v, --x v, -x=v and -x v. */
function tokenize(argv: readonly string[]): { values: Map<FlagName, RawValue>; positionals: string[] } {
  const values = new Map<FlagName, RawValue>();
  const positionals: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "--") {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    const match = /^--?([a-z][a-z0-9-]*)(?:=(.*))?$/s.exec(arg);
    if (!match) {
      positionals.push(arg);
      continue;
    }
    const name = (arg.startsWith("--") ? undefined : SHORT_FLAGS[match[1]!]) ?? match[1]!;
    if (!isFlag(name)) throw new UsageError(`unknown flag ${arg}; run usbd-tui --help for the list`);
    if (values.has(name)) throw new UsageError(`--${name} is given twice`);
    const spec: FlagSpec = FLAGS[name];
    if (spec.type === "boolean") {
      const v = match[2];
      if (v !== undefined && v !== "true" && v !== "false") throw new UsageError(`--${name} takes true or false, not "${v}"`);
      values.set(name, v !== "false");
      continue;
    }
    let value = match[2];
    if (value === undefined) {
      value = argv[++i];
      if (value === undefined) throw new UsageError(`--${name} needs a value (${spec.value ?? "VALUE"})`);
    }
    values.set(name, value);
  }
  return { values, positionals };
}

/** The flags and positionals `argv` gives, checked as parseFlags checks them: what --config's precedence rules need. */
export function givenFlags(argv: readonly string[]): { names: ReadonlySet<FlagName>; positionals: readonly string[] } {
  const { values, positionals } = tokenize(argv);
  return { names: new Set(values.keys()), positionals };
}

function numberFlag(name: FlagName, raw: RawValue | undefined, type: FlagType, fallback: number): number {
  if (raw === undefined) return fallback;
  const text = String(raw);
  try {
    if (type === "size") return parseSize(text);
  } catch (error) {
    throw new UsageError(`--${name}: ${(error as Error).message}`);
  }
  const value = Number(text);
  if (!/^\d+(\.\d+)?$/.test(text) || !Number.isFinite(value) || (type === "integer" && !Number.isInteger(value))) {
    throw new UsageError(`--${name} takes a ${type === "integer" ? "whole number" : "number of seconds"}, not "${text}"`);
  }
  return value;
}

export function parseFlags(argv: readonly string[]): CliOptions {
  const { values, positionals } = tokenize(argv);
  const str = (name: FlagName): string | undefined => {
    const v = values.get(name);
    return v === undefined ? undefined : String(v);
  };
  if (positionals.length > 1) throw new UsageError(`expected at most one device path, got: ${positionals.join(" ")}`);
  const nbdDevice = positionals[0];
  if (nbdDevice !== undefined && !/^\/dev\/nbd\d+$/.test(nbdDevice)) {
    throw new UsageError(`"${nbdDevice}" is not an NBD device path; name one like /dev/nbd0, or use flags only`);
  }
  // --run's command owns the terminal: only warnings and errors interrupt it unless asked.
  const logLevel = str("log-level") ?? (values.has("run") ? "warn" : "info");
  if (logLevel !== "debug" && logLevel !== "info" && logLevel !== "warn" && logLevel !== "error") {
    throw new UsageError(`--log-level takes debug, info, warn or error, not "${logLevel}"`);
  }
  const storeName = str("store-name") ?? "usbd";
  if (!/^[A-Za-z0-9._-]+$/.test(storeName)) {
    throw new UsageError(`--store-name "${storeName}" may only use letters, digits, '.', '_' and '-'`);
  }
  const storeSize = numberFlag("store-size", values.get("store-size"), "size", 1024 ** 3);
  if (storeSize <= 0) throw new UsageError(`--store-size must be more than 0 bytes, got ${storeSize}`);
  const metrics = str("metrics");
  if (metrics !== undefined) {
    try {
      parseMetricsAddress(metrics);
    } catch (error) {
      throw new UsageError((error as Error).message);
    }
  }
  const listen = str("listen");
  if (listen !== undefined) {
    const kernelOnly = KERNEL_FLAGS.filter((name) => values.has(name));
    if (kernelOnly.length > 0) throw new UsageError(`--${kernelOnly[0]} only applies when attaching to the kernel, not with --listen`);
  }
  const nbdInterface = str("nbd-interface") ?? "netlink";
  if (nbdInterface !== "netlink" && nbdInterface !== "ioctl") {
    throw new UsageError(`--nbd-interface takes netlink or ioctl, not "${nbdInterface}"`);
  }
  const reattach = str("reattach");
  if (reattach !== undefined && !/^\/dev\/nbd\d+$/.test(reattach)) {
    throw new UsageError(`--reattach takes an NBD device path like /dev/nbd0, not "${reattach}"`);
  }
  const connections = numberFlag("connections", values.get("connections"), "integer", 1);
  if (connections < 1 || connections > 64) throw new UsageError(`--connections must be from 1 to 64, got ${connections}`);
  const blockSize = numberFlag("block-size", values.get("block-size"), "size", 4096);
  if (blockSize < 512 || blockSize > 65536 || (blockSize & (blockSize - 1)) !== 0) {
    throw new UsageError(`--block-size must be a power of two from 512 to 64KiB, got ${blockSize}`);
  }
  const dedupCompress = str("dedup-compress") ?? "lz4";
  if (!isDedupCompression(dedupCompress)) throw new UsageError(`--dedup-compress takes lz4 or none, not "${dedupCompress}"`);
  const dedupBlockSize = values.has("dedup-blocksize") ? numberFlag("dedup-blocksize", values.get("dedup-blocksize"), "size", 4096) : undefined;
  if (dedupBlockSize !== undefined && (dedupBlockSize < 512 || dedupBlockSize > 65536 || (dedupBlockSize & (dedupBlockSize - 1)) !== 0)) {
    throw new UsageError(`--dedup-blocksize must be a power of two from 512 to 64KiB, got ${dedupBlockSize}`);
  }
  const maxBuffer = numberFlag("max-buffer", values.get("max-buffer"), "size", DEFAULT_MEMORY_LIMIT);
  if (maxBuffer < MIN_MEMORY_LIMIT) {
    throw new UsageError(`--max-buffer must be at least 32MiB (the kernel sends requests of up to 32 MiB), got ${maxBuffer}`);
  }
  const maxConnections = numberFlag("max-connections", values.get("max-connections"), "integer", DEFAULT_MAX_CONNECTIONS);
  if (maxConnections < 1) throw new UsageError(`--max-connections must be at least 1, got ${maxConnections}`);
  const socketGroupName = str("socket-group");
  if (socketGroupName !== undefined && (listen === undefined || !listen.startsWith("unix:"))) {
    throw new UsageError("--socket-group only applies to a Unix socket (--listen unix:/path)");
  }
  const unit = Math.max(blockSize, (str("dev-type") ?? "mem") === "dedup" ? (dedupBlockSize ?? 4096) : 0);
  if (storeSize % unit !== 0) throw new UsageError(sizeNotAligned(String(values.get("store-size")), storeSize, unit));
  const dedupMemcache = numberFlag("dedup-memcache", values.get("dedup-memcache"), "size", 256 * 1024 ** 2);
  if (dedupMemcache < 1024 ** 2) throw new UsageError(`--dedup-memcache must be at least 1MiB, got ${dedupMemcache}`);
  return {
    headless: values.get("headless") === true,
    listen,
    config: str("config"),
    exportName: exportName(str("export-name") ?? storeName),
    devType: str("dev-type") ?? "mem",
    storeDir: str("store-dir") ?? defaultStoreDir(),
    storeName,
    storeSize,
    storeSizeGiven: values.has("store-size"),
    blockSize,
    nbdMaxDevs: numberFlag("nbd-max-devs", values.get("nbd-max-devs"), "integer", 16),
    nbdInterface,
    connections,
    nbdTimeout: numberFlag("nbd-timeout", values.get("nbd-timeout"), "seconds", 0),
    deadConnTimeout: numberFlag("dead-conn-timeout", values.get("dead-conn-timeout"), "seconds", 60),
    reattach,
    force: values.get("force") === true,
    statsInterval: numberFlag("stats-interval", values.get("stats-interval"), "seconds", 0),
    json: values.get("json") === true,
    logLevel,
    logFile: str("log-file"),
    maxBuffer,
    maxConnections,
    handshakeTimeout: numberFlag("handshake-timeout", values.get("handshake-timeout"), "seconds", 10),
    socketGroup: socketGroupName === undefined ? undefined : socketGroup(socketGroupName),
    control: str("control"),
    metrics,
    pidFile: str("pid-file"),
    run: str("run"),
    help: values.get("help") === true,
    version: values.get("version") === true,
    dedupBlockSize,
    dedupCompress,
    dedupMemcache,
    repair: values.get("repair") === true,
    objstore: parseObjstoreFlags(
      (name) => values.get(name),
      (message) => {
        throw new UsageError(message);
      },
    ),
    access: parseAccessFlags(
      (name) => values.get(name),
      listen,
      (message) => {
        throw new UsageError(message);
      },
    ),
    nbdDevice,
  };
}

/** NBD export names are UTF-8 strings of at most 4096 bytes without NUL (the spec's rule for every string). */
function exportName(name: string): string {
  if (name.includes("\uFFFD")) throw new UsageError(`--export-name "${name}" is not valid UTF-8; NBD names must be`);
  if (name.includes("\0")) throw new UsageError("--export-name may not contain a NUL byte");
  const bytes = Buffer.byteLength(name, "utf8");
  if (bytes > MAX_STRING_SIZE) throw new UsageError(`--export-name is ${bytes} bytes long; NBD allows at most ${MAX_STRING_SIZE}`);
  return name;
}

function socketGroup(name: string): number {
  const gid = groupId(name);
  if (gid === undefined) throw new UsageError(`--socket-group: no group named "${name}"; give a group that exists (see /etc/group) or a numeric gid`);
  return gid;
}

/** The --help text, generated from FLAGS so it cannot drift from the parser. */
/**
 * Why a --store-size that is not a multiple of the block size is refused, with what to give instead: the binary
 * spelling of a decimal unit (20GB is 20*1000^3 bytes, 20GiB or 20G is 20*1024^3), and the nearest valid size.
 */
export function sizeNotAligned(text: string, bytes: number, blockSize: number): string {
  const nearest = Math.max(blockSize, Math.round(bytes / blockSize) * blockSize);
  const decimal = /^\s*(\d+(?:\.\d+)?)\s*([kmgtp])b\s*$/i.exec(text);
  const binary = decimal === null ? undefined : `${decimal[1]}${decimal[2]!.toUpperCase()}iB`;
  const letter = decimal?.[2]!.toUpperCase();
  const hint =
    binary !== undefined && parseSize(binary) % blockSize === 0
      ? `did you mean ${binary} (${letter}B counts in powers of 1000, ${letter}iB and ${letter} in powers of 1024)? Otherwise the`
      : "the";
  return (
    `--store-size ${text} is ${bytes.toLocaleString("en-US")} bytes, not a multiple of the block size (${formatSize(blockSize)}); ` +
    `${hint} nearest valid size is ${nearest.toLocaleString("en-US")} bytes (${formatSize(nearest)})`
  );
}

/** --help's groups, in order; a flag in none of them (one added later) is listed under "Other flags". */
const HELP_GROUPS: ReadonlyArray<readonly [string, (name: string) => boolean]> = [
  ["Common", (n) => ["headless", "listen", "config", "export-name", "dev-type", "store-dir", "store-name", "store-size", "block-size", "read-only", "help", "version"].includes(n)],
  ["Kernel (/dev/nbdX)", (n) => (KERNEL_FLAGS as readonly string[]).includes(n)],
  ["Network clients (--listen)", (n) => ["max-buffer", "max-connections", "handshake-timeout", "socket-group"].includes(n) || n.startsWith("tls")],
  ["Running as a service", (n) => ["run", "control", "metrics", "pid-file", "stats-interval", "json", "log-level", "log-file"].includes(n)],
  ["dedup device", (n) => n.startsWith("dedup-")],
  ["objstore device", (n) => n.startsWith("objstore-")],
  ["usbd-tui check", (n) => n === "repair"],
];

const EXAMPLES = [
  "usbd-tui --listen unix:/tmp/usbd.sock                                  1 GiB in memory, with the dashboard",
  "usbd-tui --headless --dev-type=file --store-size=20GiB                 a persistent image as /dev/nbdX (root)",
  "usbd-tui --headless --listen tcp:127.0.0.1:10809 --dev-type=dedup --store-dir=/var/lib/usbd-tui --store-name=vm1",
  "usbd-tui --dev-type=dedup --store-size=10GiB --run 'qemu-img convert -O raw disk.qcow2 \"$uri\"'",
  "usbd-tui ctl status; usbd-tui ctl flush vm1; usbd-tui top              steer the running daemon",
];

/** The --help text, generated from FLAGS so it cannot drift from the parser, grouped with examples. */
export function helpText(version: string, kinds: readonly { name: string; description: string }[]): string {
  const lines = [
    `usbd-tui ${version}: user-space block devices in TypeScript, served to the kernel (/dev/nbdX) or over NBD sockets`,
    "",
    "Usage:",
    "  usbd-tui [flags] [/dev/nbdX]           attach to the kernel NBD driver (needs root and nbd.ko)",
    "  usbd-tui --listen unix:/path/sock ...  serve over a socket for nbdfuse, qemu, nbdcopy, nbd-client",
    "  usbd-tui --config usbd.toml [flags]    several devices in one process; flags override the file's top-level keys",
    "  usbd-tui check --dev-type=dedup ...    verify a stopped dedup store (--repair fixes it; exit 3: problems left)",
    "  usbd-tui snapshot create|list|delete [NAME] --store-name VOL --objstore-cfg ...  snapshots of a stopped objstore volume",
    "  usbd-tui ctl COMMAND ...               steer a running daemon: status, stats, flush, trim, detach, stop, events",
    "  usbd-tui top                           the dashboard, attached to a running daemon",
    "",
    "Flags work as --flag=value, --flag value and the Go original's single-dash -flag. Sizes: 4096, 512K, 100 MiB,",
    "1.5G, 20GiB (K, M, G, T and KiB.. are powers of 1024, as in qemu-img; KB, MB, GB, TB powers of 1000).",
    "Durations: 10 (seconds), 2.5s, 500ms, 1m, 1h30m.",
  ];
  const flagLine = (name: string, spec: FlagSpec) => `${`  --${name}${spec.value ? ` ${spec.value}` : ""}`.padEnd(30)} ${spec.help}`;
  const entries = Object.entries(FLAGS) as [string, FlagSpec][];
  for (const [title, member] of HELP_GROUPS) {
    lines.push("", `${title}:`);
    for (const [name, spec] of entries) if (member(name)) lines.push(flagLine(name, spec));
  }
  const others = entries.filter(([name]) => !HELP_GROUPS.some(([, member]) => member(name)));
  if (others.length > 0) {
    lines.push("", "Other flags:");
    for (const [name, spec] of others) lines.push(flagLine(name, spec));
  }
  lines.push("", "Device kinds (--dev-type):");
  for (const kind of kinds) lines.push(`  ${kind.name.padEnd(10)} ${kind.description}`);
  lines.push(
    "",
    "Examples:",
    ...EXAMPLES.map((e) => `  ${e}`),
    "",
    "Exit codes: 0 clean shutdown, 1 runtime failure, 2 usage error, 3 check found problems, 4 stopped with writes",
    "kept locally for an unreachable object store (they go up at the next start); --run: the command's status.",
    "Signals: SIGINT/SIGTERM stop accepting, finish in-flight requests, flush, close; SIGUSR1 flushes every device.",
    "A kernel device is detached at SIGINT/SIGTERM in the safe order (write back, flush, disconnect, close), and not",
    "at all while it is mounted (the daemon says where and keeps serving) unless --force.",
  );
  return `${lines.join("\n")}\n`;
}
