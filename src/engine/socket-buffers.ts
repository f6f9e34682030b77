/**
 * Larger kernel socket buffers for NBD connections. With the default ~208 KiB a 1 MiB read reply needs five
 * write/wake-up cycles and a 1 MiB write arrives in as many reads; a few MiB lets one syscall move a whole request.
 */
import { SOL_SOCKET, SO_RCVBUF, SO_RCVBUFFORCE, SO_SNDBUF, SO_SNDBUFFORCE, setSocketOption } from "../ffi/sockets.ts";

/** Enough for a queue of 1 MiB requests in flight each way. */
export const SOCKET_BUFFER_BYTES = 4 * 1024 * 1024;

/**
 * Asks for `bytes` of send and receive buffer on `fd`: above the system maximum when privileged (the FORCE
 * options), otherwise up to it. Best effort: a socket that refuses keeps working with its default buffers.
 */
export function enlargeSocketBuffers(fd: number, bytes = SOCKET_BUFFER_BYTES): void {
  for (const [force, plain] of [
    [SO_SNDBUFFORCE, SO_SNDBUF],
    [SO_RCVBUFFORCE, SO_RCVBUF],
  ] as const) {
    try {
      setSocketOption(fd, SOL_SOCKET, force, bytes);
    } catch {
      try {
        setSocketOption(fd, SOL_SOCKET, plain, bytes);
      } catch {
        // Not a socket we may tune (or not a socket at all): defaults still work.
      }
    }
  }
}
