/**
 * The `usbd-tui` entry point: parse flags (and a --config file's devices) into a plan, open the devices in a
 * Daemon, then hand it to a face: the dashboard in a terminal, headless otherwise. Maps every failure to the
 * documented exit codes: 0 clean, 1 runtime failure, 2 usage error.
 */
import { mkdtempSync, rmSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { DEVICE_KINDS, deviceKinds, isDeviceKind } from "../devices/index.ts";
import { KeyError } from "../devices/objstore/codec/keys.ts";
import { LeaseHeldError, SnapshotError } from "../devices/objstore/index.ts";
import { ObjectStoreConfigError } from "../devices/objstore/store/config.ts";
import { findObjectStoreError } from "../devices/objstore/store/types.ts";
import { Daemon } from "../app/daemon.ts";
import { OpenDeviceError, StoreDirError } from "../app/open-devices.ts";
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE } from "../app/exit-codes.ts";
import { ControlSocketError } from "../app/control/server.ts";
import { MetricsAddressError } from "../app/metrics/endpoint.ts";
import { PidFileError } from "../app/pid-file.ts";
import { runCommand } from "../app/run-command.ts";
import { systemdNotifier } from "../app/systemd.ts";
import { AddressError, parseListenAddress } from "../engine/address.ts";
import { prepareKernel } from "../engine/kernel/attach.ts";
import { KernelUsageError } from "../engine/kernel/module.ts";
import { ListenError } from "../engine/listen.ts";
import type { Logger } from "../shared/log.ts";
import { canRunDashboard, runDashboard } from "../ui/run.tsx";
import { type CliOptions, UsageError, helpText, parseFlags } from "./flags.ts";
import { checkUsageProblem, runCheck } from "./check.ts";
import { loadConfig } from "./config.ts";
import { soleDaemon } from "../app/control/paths.ts";
import { runViewer } from "../ui/run-viewer.tsx";
import { runCtl } from "./ctl.ts";
import { runHeadless } from "./headless.ts";
import { runSnapshot } from "./snapshot.ts";
import { dashboardLogger, headlessLogger } from "./loggers.ts";
import { daemonPlan } from "./plan.ts";
import { VERSION } from "./version.ts";


function usage(message: string): number {
  process.stderr.write(`usbd-tui: ${message}\n`);
  return EXIT_USAGE;
}

function validate(options: CliOptions): string | undefined {
  if (!isDeviceKind(options.devType)) {
    return `unknown device type "${options.devType}"; --dev-type must be one of: ${DEVICE_KINDS.join(", ")}`;
  }
  if (options.listen === undefined) return undefined;
  if (options.nbdDevice !== undefined) return `a device path (${options.nbdDevice}) only applies to the kernel path, not to --listen`;
  try {
    parseListenAddress(options.listen);
  } catch (error) {
    if (error instanceof AddressError) return `--listen: ${error.message}`;
    throw error;
  }
  return undefined;
}

/** The devices to run: the one the flags describe, or one per [[device]] of a --config file; each checked like the flags. */
function planDevices(options: CliOptions, argv: readonly string[]): { global: CliOptions; devices: readonly CliOptions[] } {
  if (options.config === undefined) {
    const problem = validate(options);
    if (problem !== undefined) throw new UsageError(problem);
    return { global: options, devices: [options] };
  }
  const run = loadConfig(options.config, argv);
  for (const [where, o] of [["", run.global] as const, ...run.devices.map((d) => [`device "${d.exportName}": `, d] as const)]) {
    const problem = validate(o);
    if (problem !== undefined) throw new UsageError(`${options.config}: ${where}${problem}`);
  }
  return run;
}

/** `usbd-tui top [--control PATH]`: the dashboard attached to a running daemon. */
async function top(argv: readonly string[]): Promise<number> {
  let control: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "--control") control = argv[++i];
    else if (arg.startsWith("--control=")) control = arg.slice("--control=".length);
    else return usage(`top takes only --control PATH, not ${arg}`);
  }
  if (!canRunDashboard(process.stdin, process.stdout)) return usage("top needs a terminal; in scripts use usbd-tui ctl status, stats or events");
  let path: string;
  try {
    path = control ?? soleDaemon();
    return await runViewer(path, (line) => process.stderr.write(`${line}\n`));
  } catch (error) {
    return usage(error instanceof Error ? error.message : String(error));
  }
}

export async function main(argv: readonly string[]): Promise<number> {
  if (argv[0] === "snapshot") return runSnapshot(argv.slice(1), { out: (line) => process.stdout.write(`${line}\n`), err: (line) => process.stderr.write(`${line}\n`) });
  if (argv[0] === "ctl") return runCtl(argv.slice(1), { out: (line) => process.stdout.write(`${line}\n`), err: (line) => process.stderr.write(`${line}\n`) });
  if (argv[0] === "top") return top(argv.slice(1));
  const checking = argv[0] === "check";
  let options: CliOptions;
  let devices: readonly CliOptions[];
  try {
    options = parseFlags(checking ? argv.slice(1) : argv);
    if (options.help) {
      process.stdout.write(helpText(VERSION, DEVICE_KINDS.map((name) => ({ name, description: deviceKinds[name].description }))));
      return EXIT_OK;
    }
    if (options.version) {
      process.stdout.write(`usbd-tui ${VERSION}\n`);
      return EXIT_OK;
    }
    if (checking) {
      const problem = options.config !== undefined ? "usbd-tui check takes one store from flags, not --config" : checkUsageProblem(options);
      if (problem !== undefined) return usage(problem);
      return runCheck(options, {
        out: (line) => process.stdout.write(`${line}\n`),
        err: (line) => process.stderr.write(`${line}\n`),
        progress: { isTTY: process.stderr.isTTY === true, columns: process.stderr.columns ?? 80, write: (text) => writeSync(2, text) },
      });
    }
    ({ global: options, devices } = planDevices(options, argv));
  } catch (error) {
    if (error instanceof UsageError) return usage(error.message);
    throw error;
  }
  if (options.repair) return usage("--repair only applies to usbd-tui check");
  // --run without --listen or a /dev/nbdN serves on a private socket, as nbdkit does: the command gets its $uri.
  let privateDir: string | undefined;
  if (options.run !== undefined && options.listen === undefined && devices.every((d) => d.nbdDevice === undefined && d.reattach === undefined)) {
    privateDir = mkdtempSync(path.join(tmpdir(), "usbd-tui-run-"));
    options = { ...options, listen: `unix:${path.join(privateDir, "nbd.sock")}` };
  }

  if (options.listen === undefined) {
    // Before any device is created: a store must not be made for a kernel that cannot take it.
    try {
      await prepareKernel(options.nbdMaxDevs);
    } catch (error) {
      if (error instanceof KernelUsageError) return usage(error.message);
      throw error;
    }
  }

  // The dashboard when both ends are a terminal; --headless, --json or a pipe choose the headless mode.
  const dashboard = !options.headless && !options.json && options.run === undefined && canRunDashboard(process.stdin, process.stdout);
  const dashboardLog = dashboard ? dashboardLogger(options) : undefined;
  const headlessLog = headlessLogger(options);
  const log: Logger = dashboardLog ?? headlessLog;
  const daemon = new Daemon(daemonPlan(options, devices, VERSION), log, {
    endWhenNothingServed: dashboardLog === undefined && options.run === undefined,
    notifier: systemdNotifier(process.env, log),
  });
  // Before the devices open: a signal during the start is kept, not lost to the default action.
  daemon.handleSignals();
  try {
    await daemon.open();
    if (options.run !== undefined) return await runCommand(daemon, options.run);
    if (dashboardLog !== undefined) return await runDashboard(daemon);
    return await runHeadless(daemon, { json: options.json, statsInterval: options.statsInterval }, { out: (line) => process.stdout.write(`${line}\n`) });
  } catch (error) {
    // Closes whatever was opened before the failure (every device added to the host so far).
    await daemon.host.stop({ force: true }).catch(() => undefined);
    const cause = error instanceof OpenDeviceError ? error.cause : error;
    // With several devices the message names the one that failed.
    const shown = error instanceof OpenDeviceError && options.config !== undefined ? error : cause;
    const message = shown instanceof Error ? shown.message : String(shown);
    // A bad --objstore-cfg or a wrong or missing key is a mistake in the command, not a failure of the device.
    // So are credentials the store refused (wrong key, password or SSH key): the fix is in --objstore-cfg; and a volume
    // another daemon writes (the message names it), or a snapshot name that cannot be used.
    const refused = findObjectStoreError(cause, "unauthorised") !== undefined;
    if (
      cause instanceof ListenError ||
      cause instanceof ControlSocketError ||
      cause instanceof MetricsAddressError ||
      cause instanceof PidFileError ||
      cause instanceof KernelUsageError ||
      cause instanceof ObjectStoreConfigError ||
      cause instanceof StoreDirError ||
      cause instanceof KeyError ||
      cause instanceof LeaseHeldError ||
      cause instanceof SnapshotError ||
      refused
    ) {
      return usage(message);
    }
    // On stderr even after the dashboard (it has given the terminal back by now): one plain line, as usage errors
    // are, or a JSON log line with --json.
    if (options.json) headlessLog.log("error", message);
    else process.stderr.write(`usbd-tui: ${message}\n`);
    return EXIT_FAILURE;
  } finally {
    daemon.dispose();
    if (privateDir !== undefined) rmSync(privateDir, { recursive: true, force: true });
  }
}
