/**
 * Lets Bun's allocator keep freed memory for a while before it returns it to the kernel. mimalloc's default is to
 * hand memory back 100 ms after it is freed; a serving daemon frees its socket chunks and request buffers in bursts
 * (when the collector runs) and allocates as much again moments later, so every reuse page-faulted the memory back in.
 * Measured on the 1M write benchmark (mem device, 2-core VM, `bench/run.sh --jobs write-1m-qd8,...`): 607 us of server
 * CPU per MiB with the default, 395 with 1 s, 342 with 5 s, 338 with 30 s and 319 with never (-1). Never is not
 * bounded: under the robustness fuzzer resident memory kept creeping up (547 MiB at 40 s, 643 MiB at 175 s); with
 * 30 s it went up and down between 140 and 390 MiB for 180 s with no trend, because memory not reused within the
 * delay still goes back. An operator who wants memory returned sooner sets MIMALLOC_PURGE_DELAY themselves (in
 * milliseconds, as mimalloc reads it): their value is kept.
 *
 * mimalloc reads the setting once, when the process starts, and Bun does not export mi_option_set, so the daemon
 * re-executes itself (execve: same pid, same descriptors and terminal, so pid files, systemd and signals see one
 * process) with it set.
 */
import { execProgram } from "../ffi/libc.ts";

export const PURGE_DELAY_VARIABLE = "MIMALLOC_PURGE_DELAY";
/** Milliseconds freed memory stays mapped for reuse before it is returned (see above for the measurements). */
export const DAEMON_PURGE_DELAY_MS = "30000";

/** Commands that run briefly and serve nothing: not worth a second start (about 50 ms). */
const SHORT_COMMANDS = new Set(["--help", "-h", "--version", "-V", "ctl"]);

export interface ProcessShape {
  readonly execPath: string;
  readonly execArgv: readonly string[];
  /** process.argv: [bun, script, ...args], or in a compiled binary [bun, /$bunfs/root/name, ...args]. */
  readonly argv: readonly string[];
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly platform: string;
}

/** The program and arguments to start this same command again with, or undefined when it should not be. */
export function restartPlan(shape: ProcessShape): { argv: string[]; env: Record<string, string> } | undefined {
  if (shape.platform !== "linux" || shape.env[PURGE_DELAY_VARIABLE] !== undefined) return undefined;
  const [, script, ...args] = shape.argv;
  if (script === undefined || SHORT_COMMANDS.has(args[0] ?? "")) return undefined;
  const compiled = script.startsWith("/$bunfs/");
  const argv = compiled ? [shape.execPath, ...args] : [shape.execPath, ...shape.execArgv, script, ...args];
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(shape.env)) if (v !== undefined) env[k] = v;
  env[PURGE_DELAY_VARIABLE] = DAEMON_PURGE_DELAY_MS;
  return { argv, env };
}

/** Restarts this process with the daemon's purge delay, if it is not set already; returns only if it is not restarted. */
export function applyPurgeDelay(): void {
  const plan = restartPlan({ execPath: process.execPath, execArgv: process.execArgv, argv: process.argv, env: process.env, platform: process.platform });
  if (plan === undefined) return;
  // Only returns on failure (a read-only or missing program file): then the daemon simply runs with the default.
  execProgram(process.execPath, plan.argv, plan.env);
}
