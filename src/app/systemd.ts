/**
 * systemd's notify protocol (sd_notify(3)): with NOTIFY_SOCKET set, the daemon tells the service manager when it is
 * ready (READY=1, once every device is served), what it is doing (STATUS=..., also every few seconds), and when it
 * starts stopping (STOPPING=1). A datagram per message on the Unix socket systemd names (`@name` is abstract).
 * Without NOTIFY_SOCKET every call does nothing. A message that cannot be sent is logged once, never fatal.
 */
import { closeFd } from "../ffi/libc.ts";
import { SOCK_DGRAM, AF_UNIX, connectUnix, openSocket, sendAll } from "../ffi/sockets.ts";
import type { Logger } from "../shared/log.ts";

export interface Notifier {
  /** Sends `KEY=value` lines, e.g. `{ READY: "1", STATUS: "serving 2 devices" }`. */
  notify(fields: Readonly<Record<string, string>>): void;
  readonly enabled: boolean;
}

export const noNotifier: Notifier = { notify() {}, enabled: false };

/**
 * The notifier NOTIFY_SOCKET asks for (and removes it from the environment, as sd_notify's unset_environment does,
 * so a --run command or any other child does not speak for this daemon).
 */
export function systemdNotifier(env: NodeJS.ProcessEnv, log: Logger): Notifier {
  const socket = env.NOTIFY_SOCKET;
  delete env.NOTIFY_SOCKET;
  if (socket === undefined || socket === "") return noNotifier;
  if (!socket.startsWith("/") && !socket.startsWith("@")) {
    log.log("warn", `NOTIFY_SOCKET is neither a path nor an abstract name (@...); not notifying systemd`, { socket });
    return noNotifier;
  }
  const name = socket.startsWith("@") ? `\0${socket.slice(1)}` : socket;
  let warned = false;
  return {
    enabled: true,
    notify(fields) {
      const text = Object.entries(fields)
        .map(([k, v]) => `${k}=${v.replace(/\n/g, " ")}`)
        .join("\n");
      let fd: number | undefined;
      try {
        fd = openSocket(AF_UNIX, SOCK_DGRAM);
        connectUnix(fd, name);
        sendAll(fd, Buffer.from(`${text}\n`));
      } catch (error) {
        if (!warned) log.log("warn", `cannot notify systemd on ${socket}: ${error instanceof Error ? error.message : String(error)}`);
        warned = true;
      } finally {
        if (fd !== undefined) closeFd(fd);
      }
    },
  };
}
