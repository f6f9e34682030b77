/**
 * Socket calls through libc that Bun's socket API does not offer: descriptors made outside Bun (to hand to the
 * kernel), socket options, peer credentials, and direct reads from a socket Bun owns.
 */
import { ByteReader, ByteWriter } from "./struct.ts";
import { LibcError, failure, lastErrno, libc } from "./libc.ts";

export const AF_UNIX = 1;
export const AF_NETLINK = 16;
export const SOCK_STREAM = 1;
export const SOCK_DGRAM = 2;
export const SOCK_RAW = 3;
export const SOCK_CLOEXEC = 0o2000000;
export const SOL_SOCKET = 1;
export const SO_SNDBUF = 7;
export const SO_RCVBUF = 8;
export const SO_PEERCRED = 17;
export const SO_RCVTIMEO = 20;
export const SO_SNDTIMEO = 21;
/** Like SO_SNDBUF/SO_RCVBUF but may exceed net.core.wmem_max/rmem_max; needs CAP_NET_ADMIN. */
export const SO_SNDBUFFORCE = 32;
export const SO_RCVBUFFORCE = 33;
export const MSG_DONTWAIT = 0x40;

const EINTR = 4;
const EAGAIN = 11;
/** sizeof(struct sockaddr_un): a 2-byte family and 108 bytes of path. */
const SOCKADDR_UN_SIZE = 110;

/** socket(2), close-on-exec. */
export function openSocket(domain: number, type: number, protocol = 0): number {
  const fd = libc().socket(domain, type | SOCK_CLOEXEC, protocol);
  if (fd < 0) throw failure("socket", `domain ${domain}, type ${type}`);
  return fd;
}

/** A sockaddr_un for a path, or for an abstract name written with a leading "\0"; with its length. */
function unixAddress(name: string): { address: Uint8Array; length: number } {
  const path = Buffer.from(name, "utf8");
  // A filesystem path is NUL-terminated; an abstract name is exactly its bytes.
  const length = 2 + path.length + (name.startsWith("\0") ? 0 : 1);
  if (length > SOCKADDR_UN_SIZE) throw new RangeError(`Unix socket name too long (${path.length} bytes): ${name}`);
  return { address: new ByteWriter(SOCKADDR_UN_SIZE).u16(AF_UNIX).bytes(path).zeros(SOCKADDR_UN_SIZE - 2 - path.length).finish(), length };
}

/** bind(2) to a Unix socket path or abstract name (leading "\0"). */
export function bindUnix(fd: number, name: string): void {
  const { address, length } = unixAddress(name);
  if (libc().bind(fd, address, length) !== 0) throw failure("bind", name.replace("\0", "@"));
}

/**
 * connect(2) to a Unix socket: a path, or an abstract name written with a leading "\0" (the form Bun.listen takes
 * too). Connecting to a listening socket completes at once; the listener accepts later.
 */
export function connectUnix(fd: number, name: string): void {
  const { address, length } = unixAddress(name);
  if (libc().connect(fd, address, length) !== 0) throw failure("connect", name.replace("\0", "@"));
}

/**
 * listen(2) again on a socket that is already listening: Linux then takes the new accept backlog (capped at
 * net.core.somaxconn), which is how a listener made by Bun (backlog 512) gets a deeper queue for connection bursts.
 */
export function setListenBacklog(fd: number, backlog: number): void {
  if (libc().listen(fd, backlog) !== 0) throw failure("listen", `fd ${fd}, backlog ${backlog}`);
}

/** socketpair(2): two connected sockets, close-on-exec. */
export function socketpair(domain = AF_UNIX, type = SOCK_STREAM): [number, number] {
  const fds = new Int32Array(2);
  if (libc().socketpair(domain, type | SOCK_CLOEXEC, 0, fds) !== 0) throw failure("socketpair", `domain ${domain}`);
  return [fds[0] ?? -1, fds[1] ?? -1];
}

/** send(2) of all of `data` on a blocking socket (loops over partial sends). */
export function sendAll(fd: number, data: Uint8Array, flags = 0): void {
  let sent = 0;
  while (sent < data.length) {
    const n = Number(libc().send(fd, data.subarray(sent), data.length - sent, flags));
    if (n >= 0) {
      sent += n;
      continue;
    }
    const errno = lastErrno();
    if (errno !== EINTR) throw new LibcError("send", errno, `fd ${fd}`);
  }
}

/**
 * recv(2) into `dest`: the bytes read, 0 at end of stream. With MSG_DONTWAIT in `flags`, -1 when nothing is
 * waiting; on a socket with a receive timeout, EAGAIN also means the timeout passed and is returned as -1.
 */
export function receive(fd: number, dest: Uint8Array, flags = 0): number {
  for (;;) {
    const r = Number(libc().recv(fd, dest, dest.length, flags));
    if (r >= 0) return r;
    const errno = lastErrno();
    if (errno === EAGAIN) return -1;
    if (errno !== EINTR) throw new LibcError("recv", errno, `fd ${fd}`);
  }
}

/**
 * recv(2) with MSG_DONTWAIT into `dest`: the bytes read, 0 at end of stream, or -1 when nothing is waiting now.
 * Other failures (the peer reset the connection) throw.
 */
export function recvNonBlocking(fd: number, dest: Uint8Array): number {
  return receive(fd, dest, MSG_DONTWAIT);
}

const F_DUPFD_CLOEXEC = 1030;

/** A second descriptor for the socket (or file) `fd` refers to, close-on-exec; the two share the one connection. */
export function duplicateDescriptor(fd: number): number {
  const copy = libc().fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (copy < 0) throw failure("fcntl", `fd ${fd}, F_DUPFD_CLOEXEC`);
  return copy;
}

const POLLERR = 0x8;
const POLLHUP = 0x10;

/**
 * Whether the connection is gone in both directions (the peer closed its socket or reset the connection), asked
 * with poll(2) and no wait, so bytes still waiting to be read do not hide it. A peer that only stopped sending
 * (a half-close) is not gone: it may still read its replies.
 */
export function peerClosed(fd: number): boolean {
  // struct pollfd { int fd; short events; short revents; }: POLLHUP and POLLERR are reported whatever is asked.
  const pollfd = new ByteWriter(8).u32(fd).u16(0).u16(0).finish();
  const ready = libc().poll(pollfd, 1, 0);
  if (ready < 0) throw failure("poll", `fd ${fd}`);
  const revents = new ByteReader(pollfd.subarray(6)).u16();
  return (revents & (POLLHUP | POLLERR)) !== 0;
}

/** setsockopt(2) for an int-valued option. */
export function setSocketOption(fd: number, level: number, name: number, value: number): void {
  const v = new Int32Array([value]);
  if (libc().setsockopt(fd, level, name, v, 4) !== 0) throw failure("setsockopt", `fd ${fd}, option ${name}`);
}

/** getsockopt(2) for an int-valued option. */
export function getSocketOption(fd: number, level: number, name: number): number {
  const v = new Int32Array(1);
  const len = new Uint32Array([4]);
  if (libc().getsockopt(fd, level, name, v, len) !== 0) throw failure("getsockopt", `fd ${fd}, option ${name}`);
  return v[0] ?? 0;
}

/** SO_RCVTIMEO or SO_SNDTIMEO: blocking calls on `fd` give up (EAGAIN) after `ms` milliseconds; 0 waits forever. */
export function setSocketTimeout(fd: number, option: typeof SO_RCVTIMEO | typeof SO_SNDTIMEO, ms: number): void {
  // struct timeval { time_t tv_sec; suseconds_t tv_usec; }: two 64-bit fields on 64-bit Linux.
  const timeval = new ByteWriter(16).u64(Math.floor(ms / 1000)).u64((ms % 1000) * 1000).finish();
  if (libc().setsockopt(fd, SOL_SOCKET, option, timeval, timeval.length) !== 0) {
    throw failure("setsockopt", `fd ${fd}, option ${option}`);
  }
}

export interface PeerCredentials {
  readonly pid: number;
  readonly uid: number;
  readonly gid: number;
}

/** SO_PEERCRED: the process that connected the other end of a Unix socket, as of connect(). */
export function peerCredentials(fd: number): PeerCredentials {
  const ucred = new Uint8Array(12);
  const len = new Uint32Array([ucred.length]);
  if (libc().getsockopt(fd, SOL_SOCKET, SO_PEERCRED, ucred, len) !== 0) throw failure("getsockopt", `fd ${fd}, SO_PEERCRED`);
  const r = new ByteReader(ucred);
  return { pid: r.i32(), uid: r.u32(), gid: r.u32() };
}
