/**
 * A Bun socket as a session's Transport: writes, end, and direct reads of bytes already waiting on its descriptor
 * (Bun's own read path copies each chunk into a fresh allocation). Shared by the network listener and the kernel
 * path, whose server ends are Bun sockets too.
 */
import type { Socket } from "bun";
import { peerClosed, recvNonBlocking } from "../ffi/sockets.ts";
import type { Transport } from "./reply-writer.ts";

/** The OS descriptor of a Bun socket: present at run time, though Bun's type declarations omit it. */
export function socketFd(socket: Socket<unknown>): number | undefined {
  const fd = (socket as unknown as { fd?: number }).fd;
  return typeof fd === "number" && fd >= 0 ? fd : undefined;
}

/** Bytes already waiting on `fd`; 0 when none, at end of stream, or on an error (Bun's own read reports those). */
function receiveWaiting(fd: number, dest: Uint8Array): number {
  try {
    return Math.max(0, recvNonBlocking(fd, dest));
  } catch {
    return 0;
  }
}

export function socketTransport(socket: Socket<unknown>): Transport {
  const fd = socketFd(socket);
  return {
    write: (data, offset, length) => socket.write(data, offset, length),
    end: () => socket.end(),
    destroy: () => socket.terminate(),
    pause: () => socket.pause(),
    resume: () => socket.resume(),
    peerGone: fd !== undefined ? () => peerClosed(fd) : undefined,
    // Bun hands each recv() to `data` before it reads again, so bytes read here are the ones that follow.
    receiveInto: fd !== undefined ? (dest) => receiveWaiting(fd, dest) : undefined,
  };
}
