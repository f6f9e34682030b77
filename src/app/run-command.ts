/**
 * `--run CMD`, as nbdkit has it: serve, run CMD through `sh -c` with where to reach the devices in its environment
 * (`$uri` for the first network export and `$uri_NAME` for each; `$nbd` and `$nbd_NAME` for kernel devices), then
 * shut down in the safe order once it exits, and exit with its status. A script then needs no background daemon and
 * no cleanup: `usbd-tui --dev-type=dedup ... --run 'qemu-img convert -O raw disk.qcow2 "$uri"'`.
 */
import { constants } from "node:os";
import type { Daemon } from "./daemon.ts";
import type { ServedDevice } from "./serve.ts";

/** The variables CMD gets: `uri`/`uri_NAME` (network exports), `nbd`/`nbd_NAME` (kernel devices). */
export function commandEnvironment(served: readonly ServedDevice[]): Record<string, string> {
  const env: Record<string, string> = {};
  const variable = (prefix: string, name: string) => `${prefix}_${name.replace(/[^A-Za-z0-9_]/g, "_")}`;
  for (const d of served) {
    if (d.via === "listen") {
      env.uri ??= d.uri;
      env[variable("uri", d.name)] = d.uri;
    } else {
      env.nbd ??= d.path;
      env[variable("nbd", d.name)] = d.path;
    }
  }
  return env;
}

/**
 * Serves, runs `command` until it exits, then stops the daemon; resolves with the command's status (or, when it
 * succeeded, the shutdown's exit code). A SIGINT or SIGTERM meanwhile goes to the command (a terminal's Ctrl-C
 * reaches it by itself), and the shutdown follows once it has exited, so its connections are never cut under it.
 */
export async function runCommand(daemon: Daemon, command: string): Promise<number> {
  const served = await daemon.serve();
  if (daemon.isStopping) return (await daemon.finished).code;
  const child = Bun.spawn(["sh", "-c", command], {
    stdin: "inherit",
    stdout: "inherit",
    stderr: "inherit",
    env: { ...process.env, ...commandEnvironment(served) },
  });
  const fromTerminal = process.stdin.isTTY === true;
  daemon.redirectStopSignals((signal) => {
    // The terminal's Ctrl-C went to the whole foreground group already; a kill(1) did not.
    if (!(signal === "SIGINT" && fromTerminal)) child.kill(signal);
  });
  await child.exited;
  daemon.redirectStopSignals(undefined);
  const signal = child.signalCode;
  const status = child.exitCode ?? 128 + (typeof signal === "string" ? (constants.signals as Record<string, number>)[signal] ?? 0 : (signal ?? 0));
  let outcome = await daemon.stop("command");
  if (outcome.kind === "refused") {
    // The command left a kernel device mounted: keep serving (its data is safe) until it is unmounted and a signal comes.
    daemon.log.log("warn", `the command has exited, but ${outcome.message}: still serving; unmount it, then send SIGTERM`);
    outcome = await daemon.finished;
  }
  return status !== 0 ? status : outcome.code;
}
