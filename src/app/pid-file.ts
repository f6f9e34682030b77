/**
 * `--pid-file PATH`: the daemon's pid, written once it serves (atomically: a reader never sees half a number) and
 * removed when it exits, unless another process has written its own since. A file that names a live process other
 * than this one means a second daemon, which is refused before anything is opened.
 */
import { readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { processAlive } from "../shared/process-alive.ts";

export class PidFileError extends Error {}

function readPid(path: string): number | undefined {
  try {
    const pid = Number(readFileSync(path, "utf8").trim());
    return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** Refuses a pid file that a live process other than this one holds (a stale one is fine: it is replaced). */
export function checkPidFile(path: string): void {
  const pid = readPid(path);
  if (pid !== undefined && pid !== process.pid && processAlive(pid)) {
    throw new PidFileError(`--pid-file ${path} names pid ${pid}, which is running: another daemon uses it; stop that one or choose another path`);
  }
}

export function writePidFile(path: string): void {
  const temporary = `${path}.${process.pid}.tmp`;
  try {
    writeFileSync(temporary, `${process.pid}\n`, { mode: 0o644 });
    renameSync(temporary, path);
  } catch (error) {
    rmSync(temporary, { force: true });
    throw new PidFileError(`cannot write --pid-file ${path}: ${error instanceof Error ? error.message : String(error)}`);
  }
}

/** Removes the pid file if it is still this process's. */
export function removePidFile(path: string): void {
  if (readPid(path) === process.pid) rmSync(path, { force: true });
}
