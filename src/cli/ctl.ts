/**
 * `usbd-tui ctl [--control PATH] [--json] COMMAND ...`: steers a running daemon through its control socket, from
 * another terminal or a script. Without --control it finds the daemon's socket (the only one running, or asks).
 * Exit codes: 0 done, 1 the daemon refused or failed (its message says why), 2 usage error or no daemon to talk to.
 */
import { ControlClient } from "../app/control/client.ts";
import { NoDaemonError, soleDaemon } from "../app/control/paths.ts";
import type { DeviceStatus } from "../app/control/protocol.ts";
import { statsLine } from "../app/stats-lines.ts";
import { describeClient, type HostEvent } from "../engine/host-types.ts";
import { formatUptime } from "../shared/format-gauge.ts";
import { formatSize } from "../shared/format-size.ts";

export interface CtlIo {
  readonly out: (line: string) => void;
  readonly err: (line: string) => void;
}

export const CTL_USAGE = [
  "usbd-tui ctl [--control PATH] [--json] COMMAND",
  "  status                   the daemon and each device: state, where served, clients, last error",
  "  stats                    each device's numbers (as the daemon's stats lines print them)",
  "  flush [NAME]             flush one device, or every device",
  "  trim NAME                fstrim a mounted kernel device, or reclaim space inside the device",
  "  detach NAME [--force]    flush, disconnect and close one device; the others keep serving",
  "  snapshot NAME SNAPSHOT   a named snapshot of a serving objstore volume, without stopping it",
  "  stop [--force]           shut the daemon down in the safe order (--force: even with clients connected)",
  "  events [--last N]        stream the daemon's events as they happen (the last N kept ones first)",
].join("\n");

class CtlUsageError extends Error {}

interface CtlArgs {
  readonly control: string | undefined;
  readonly json: boolean;
  readonly force: boolean;
  readonly last: number;
  readonly words: readonly string[];
}

function parseCtlArgs(argv: readonly string[]): CtlArgs {
  let control: string | undefined;
  let json = false;
  let force = false;
  let last = 0;
  const words: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const value = (name: string) => {
      const inline = arg.includes("=") ? arg.slice(arg.indexOf("=") + 1) : argv[++i];
      if (inline === undefined || inline === "") throw new CtlUsageError(`${name} needs a value`);
      return inline;
    };
    if (arg === "--json") json = true;
    else if (arg === "--force") force = true;
    else if (arg === "--control" || arg.startsWith("--control=")) control = value("--control");
    else if (arg === "--last" || arg.startsWith("--last=")) {
      const n = value("--last");
      if (!/^\d+$/.test(n)) throw new CtlUsageError(`--last takes a number of events, not "${n}"`);
      last = Number(n);
    } else if (arg.startsWith("-") && arg !== "-") throw new CtlUsageError(`unknown flag ${arg} for usbd-tui ctl`);
    else words.push(arg);
  }
  return { control, json, force, last, words };
}

/** The socket to talk to: --control, or the only daemon running in the default directory. */
function socketPath(control: string | undefined): string {
  if (control !== undefined) return control;
  try {
    return soleDaemon();
  } catch (error) {
    throw error instanceof NoDaemonError ? new CtlUsageError(error.message) : error;
  }
}

function need(words: readonly string[], at: number, what: string): string {
  const word = words[at];
  if (word === undefined) throw new CtlUsageError(`usbd-tui ctl ${words[0]} needs ${what}`);
  return word;
}

function statusLines(result: { daemon: { version: string; pid: number; startedAt: number; listen: string | undefined; control: string; stopping: boolean }; devices: readonly DeviceStatus[] }): string[] {
  const d = result.daemon;
  const where = d.listen === undefined ? "kernel NBD" : `serving on ${d.listen}`;
  const lines = [`usbd-tui ${d.version} (pid ${d.pid}), up ${formatUptime((Date.now() - d.startedAt) / 1000)}, ${where}${d.stopping ? ", stopping" : ""}, control ${d.control}`];
  for (const s of result.devices) {
    const state = s.activity === undefined ? s.state : `${s.activity.label} ${(s.activity.elapsedMs / 1000).toFixed(1)} s`;
    lines.push(`  ${s.device}: ${String(s.kind)}, ${formatSize(Number(s.size))}, ${state}, ${String(s.servedAt ?? (s.kernel as { path?: string } | undefined)?.path ?? "not served")}`);
    if (s.clients.length > 0) lines.push(`    ${s.clients.length} client${s.clients.length === 1 ? "" : "s"}: ${s.clients.map(describeClient).join(", ")}`);
    if (s.lastError !== undefined) lines.push(`    error: ${s.lastError}`);
  }
  return lines;
}

function eventText(e: HostEvent): string {
  const time = new Date(e.time).toISOString().replace("T", " ").slice(0, 19);
  return `${time} ${e.device === "" ? "-" : e.device} ${e.kind}: ${e.message}`;
}

/** Runs `usbd-tui ctl ...` (argv after "ctl"); resolves with the exit code. `events` runs until the daemon stops. */
export async function runCtl(argv: readonly string[], io: CtlIo): Promise<number> {
  let args: CtlArgs;
  let path: string;
  try {
    args = parseCtlArgs(argv);
    if (args.words.length === 0 || args.words[0] === "help") {
      io.out(CTL_USAGE);
      return args.words.length === 0 ? 2 : 0;
    }
    path = socketPath(args.control);
  } catch (error) {
    if (error instanceof CtlUsageError) {
      io.err(`usbd-tui ctl: ${error.message}`);
      return 2;
    }
    throw error;
  }
  let client: ControlClient;
  try {
    client = await ControlClient.connect(path);
  } catch (error) {
    io.err(`usbd-tui ctl: ${error instanceof Error ? error.message : String(error)}`);
    return 2;
  }
  const print = (value: unknown, text: () => string | string[]) => {
    if (args.json) io.out(JSON.stringify(value));
    else for (const line of [text()].flat()) io.out(line);
  };
  const [command] = args.words;
  try {
    switch (command) {
      case "status": {
        const r = await client.request({ command: "status" });
        print(r, () => statusLines(r));
        return 0;
      }
      case "stats": {
        const r = await client.request({ command: "stats" });
        if (args.json) for (const d of r.devices) io.out(JSON.stringify(d));
        else {
          const snapshot = await client.request({ command: "snapshot" });
          for (const s of snapshot.devices) io.out(statsLine(s));
        }
        return 0;
      }
      case "flush": {
        const r = await client.request({ command: "flush", ...(args.words[1] === undefined ? {} : { device: args.words[1] }) });
        print(r, () => r.flushed.map((f) => `${f.device}: flush done in ${f.ms.toFixed(1)} ms`));
        return 0;
      }
      case "trim": {
        const r = await client.request({ command: "trim", device: need(args.words, 1, "a device name") });
        print(r, () => `${args.words[1]}: ${r.detail} (${formatSize(r.bytes)}) in ${r.ms.toFixed(1)} ms`);
        return 0;
      }
      case "detach": {
        const r = await client.request({ command: "detach", device: need(args.words, 1, "a device name"), force: args.force });
        print(r, () => `${r.device}: detached (flushed, disconnected and closed)`);
        return 0;
      }
      case "snapshot": {
        const device = need(args.words, 1, "a device name and a snapshot name");
        const r = await client.request({ command: "create-snapshot", device, name: need(args.words, 2, "a snapshot name after the device name") });
        print(r, () => `snapshot ${r.device}@${r.name} created (${r.createdAt})`);
        return 0;
      }
      case "stop": {
        const r = await client.request({ command: "stop", force: args.force });
        print(r, () => `stopped in the safe order; the daemon exits with ${r.code}`);
        return 0;
      }
      case "events":
        return await streamEvents(client, args, io);
      default:
        io.err(`usbd-tui ctl: unknown command "${command}"\n${CTL_USAGE}`);
        return 2;
    }
  } catch (error) {
    if (error instanceof CtlUsageError) {
      io.err(`usbd-tui ctl: ${error.message}`);
      return 2;
    }
    io.err(`usbd-tui ctl ${command}: ${error instanceof Error ? error.message : String(error)}`);
    return 1;
  } finally {
    if (command !== "events") client.close();
  }
}

/** Prints events until the daemon goes away (exit 0) or the user interrupts (SIGINT: exit 0 as well). */
async function streamEvents(client: ControlClient, args: CtlArgs, io: CtlIo): Promise<number> {
  const ended = new Promise<void>((resolve) => {
    client.onClose(resolve);
    process.once("SIGINT", () => {
      client.close();
      resolve();
    });
  });
  await client.events((event) => io.out(args.json ? JSON.stringify(event) : eventText(event)), { last: args.last });
  await ended;
  return 0;
}
