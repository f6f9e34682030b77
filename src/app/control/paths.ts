/**
 * Where control sockets live: `/run/usbd-tui/` for root, `$XDG_RUNTIME_DIR/usbd-tui/` otherwise (or
 * `/tmp/usbd-tui-<uid>/` without it). A daemon's default socket is `<name>.<pid>.sock` there, so daemons never
 * collide, and `ctl` finds the running ones by listing the directory.
 */
import { readdirSync, rmSync } from "node:fs";
import path from "node:path";
import { processAlive } from "../../shared/process-alive.ts";

export function defaultControlDir(env: Readonly<Record<string, string | undefined>> = process.env): string {
  const uid = process.getuid?.() ?? 0;
  if (uid === 0) return "/run/usbd-tui";
  const runtime = env.XDG_RUNTIME_DIR;
  return runtime !== undefined && runtime !== "" ? path.join(runtime, "usbd-tui") : `/tmp/usbd-tui-${uid}`;
}

/** The socket a daemon named `name` (its config file's or first device's name) gets without --control. */
export function defaultControlPath(name: string, dir = defaultControlDir()): string {
  return path.join(dir, `${name}.${process.pid}.sock`);
}

export interface FoundDaemon {
  readonly path: string;
  readonly name: string;
  readonly pid: number;
}


/** Removes default-named sockets in `dir` whose daemon died without removing its own (a SIGKILL, a crash). */
export function removeStaleSockets(dir = defaultControlDir()): void {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return;
  }
  for (const file of names) {
    const match = /^.+\.(\d+)\.sock$/.exec(file);
    if (match !== null && !processAlive(Number(match[1]))) rmSync(path.join(dir, file), { force: true });
  }
}

/** The daemons whose default sockets are in `dir` and whose process is alive, oldest pid first. */
export function findDaemons(dir = defaultControlDir()): FoundDaemon[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const found: FoundDaemon[] = [];
  for (const file of names) {
    const match = /^(.+)\.(\d+)\.sock$/.exec(file);
    if (match === null) continue;
    const pid = Number(match[2]);
    if (processAlive(pid)) found.push({ path: path.join(dir, file), name: match[1]!, pid });
  }
  return found.sort((a, b) => a.pid - b.pid);
}

/** No daemon to talk to, or several and none chosen: the message says what to do. */
export class NoDaemonError extends Error {}

/** The control socket of the only daemon running in `dir`; throws NoDaemonError for none or several. */
export function soleDaemon(dir = defaultControlDir()): string {
  const found = findDaemons(dir);
  if (found.length === 1) return found[0]!.path;
  if (found.length === 0) throw new NoDaemonError(`no running usbd-tui daemon has a control socket in ${dir}; start one, or pass --control PATH`);
  throw new NoDaemonError(`${found.length} daemons are running (${found.map((d) => `${d.path} (pid ${d.pid})`).join(", ")}); pass --control PATH to choose one`);
}
