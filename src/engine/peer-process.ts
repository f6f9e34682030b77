/** Which local process is at the other end of a Unix socket connection, for people: `nbdfuse (pid 4242)`. */
import { readFileSync } from "node:fs";
import { peerCredentials } from "../ffi/sockets.ts";

/** The peer's command name and pid, or undefined when the descriptor is not a Unix socket or the process is gone. */
export function peerProcess(fd: number | undefined): string | undefined {
  if (fd === undefined) return undefined;
  let pid: number;
  try {
    pid = peerCredentials(fd).pid;
  } catch {
    return undefined;
  }
  if (pid <= 0) return undefined;
  try {
    return `${readFileSync(`/proc/${pid}/comm`, "utf8").trim()} (pid ${pid})`;
  } catch {
    return `pid ${pid}`;
  }
}
