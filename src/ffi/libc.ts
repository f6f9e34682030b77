/**
 * The libc calls usbd-tui needs that Node's fs module lacks (fallocate, SEEK_DATA/SEEK_HOLE, flock, ioctl,
 * socketpair). Every call returns a value or throws a LibcError naming the call, its argument and the errno.
 */
import { dlopen, FFIType, read, type Pointer } from "bun:ffi";
import { describeErrno, errnoName } from "./errno.ts";

export const FALLOC_FL_KEEP_SIZE = 0x01;
export const FALLOC_FL_PUNCH_HOLE = 0x02;
export const FALLOC_FL_ZERO_RANGE = 0x10;

export const SEEK_SET = 0;
export const SEEK_DATA = 3;
export const SEEK_HOLE = 4;

export const LOCK_SH = 1;
export const LOCK_EX = 2;
export const LOCK_NB = 4;
export const LOCK_UN = 8;

export const AF_UNIX = 1;
export const SOCK_STREAM = 1;
export const SOCK_CLOEXEC = 0o2000000;
export const SOL_SOCKET = 1;
export const SO_SNDBUF = 7;
export const SO_RCVBUF = 8;
/** Like SO_SNDBUF/SO_RCVBUF but may exceed net.core.wmem_max/rmem_max; needs CAP_NET_ADMIN. */
export const SO_SNDBUFFORCE = 32;
export const SO_RCVBUFFORCE = 33;

const ENXIO = 6;
const EAGAIN = 11;
const EINTR = 4;
export const MSG_DONTWAIT = 0x40;

/** A failed libc call; `code` is the errno name ("EOPNOTSUPP"), like Node's fs errors. */
export class LibcError extends Error {
  constructor(
    readonly call: string,
    readonly errno: number,
    detail: string,
  ) {
    super(`${call}(${detail}): ${describeErrno(errno)}`);
    this.name = "LibcError";
  }

  get code(): string {
    return errnoName(this.errno);
  }
}

function open() {
  return dlopen("libc.so.6", {
    __errno_location: { args: [], returns: FFIType.ptr },
    fallocate: { args: [FFIType.i32, FFIType.i32, FFIType.i64, FFIType.i64], returns: FFIType.i32 },
    // i64_fast: offsets come back as plain numbers (they fit: files stay below 2^53 bytes).
    lseek: { args: [FFIType.i32, FFIType.i64, FFIType.i32], returns: FFIType.i64_fast },
    flock: { args: [FFIType.i32, FFIType.i32], returns: FFIType.i32 },
    // Fixed three-argument form: variadic calls are not portable through FFI, and every ioctl we use takes one arg.
    ioctl: { args: [FFIType.i32, FFIType.u64, FFIType.ptr], returns: FFIType.i32 },
    socketpair: { args: [FFIType.i32, FFIType.i32, FFIType.i32, FFIType.ptr], returns: FFIType.i32 },
    recv: { args: [FFIType.i32, FFIType.ptr, FFIType.u64, FFIType.i32], returns: FFIType.i64_fast },
    setsockopt: { args: [FFIType.i32, FFIType.i32, FFIType.i32, FFIType.ptr, FFIType.u32], returns: FFIType.i32 },
    getsockopt: { args: [FFIType.i32, FFIType.i32, FFIType.i32, FFIType.ptr, FFIType.ptr], returns: FFIType.i32 },
  });
}

let lib: ReturnType<typeof open> | undefined;

/** libc, opened on first use so that importing this module costs nothing for code paths that never call it. */
function libc(): ReturnType<typeof open>["symbols"] {
  lib ??= open();
  return lib.symbols;
}

/** The current errno. Call it first thing after a failing call, before anything else can overwrite errno. */
export function lastErrno(): number {
  const p = libc().__errno_location();
  return p === null ? 0 : read.i32(p, 0);
}

function fail(call: string, detail: string): LibcError {
  return new LibcError(call, lastErrno(), detail);
}

/** fallocate(2): allocate, punch (FALLOC_FL_PUNCH_HOLE|FALLOC_FL_KEEP_SIZE) or zero (FALLOC_FL_ZERO_RANGE). */
export function fallocate(fd: number, mode: number, offset: number, length: number): void {
  if (libc().fallocate(fd, mode, offset, length) !== 0) throw fail("fallocate", `fd ${fd}`);
}

/** lseek(2) returning the new offset. */
export function lseek(fd: number, offset: number, whence: number): number {
  const r = Number(libc().lseek(fd, offset, whence));
  if (r < 0) throw fail("lseek", `fd ${fd}`);
  return r;
}

/**
 * The next seek target for SEEK_DATA or SEEK_HOLE at or after `offset`, or null when there is none: the kernel
 * says ENXIO when no data follows `offset` (SEEK_DATA) or when `offset` is at or past the end of the file.
 */
export function seekExtent(fd: number, offset: number, whence: typeof SEEK_DATA | typeof SEEK_HOLE): number | null {
  const r = Number(libc().lseek(fd, offset, whence));
  if (r >= 0) return r;
  const errno = lastErrno();
  if (errno === ENXIO) return null;
  throw new LibcError("lseek", errno, `fd ${fd}, ${whence === SEEK_DATA ? "SEEK_DATA" : "SEEK_HOLE"}`);
}

/** flock(2). With LOCK_NB a held lock throws a LibcError whose code is "EAGAIN" (EWOULDBLOCK). */
export function flock(fd: number, operation: number): void {
  if (libc().flock(fd, operation) !== 0) throw fail("flock", `fd ${fd}`);
}

/**
 * ioctl(2) with one argument: a buffer the kernel reads or fills, or a plain integer (e.g. NBD_SET_SOCK's fd).
 * Returns the call's non-negative result.
 */
export function ioctl(fd: number, request: number, arg: NodeJS.TypedArray | number | null): number {
  const a = typeof arg === "number" ? (arg as Pointer) : arg;
  const r = libc().ioctl(fd, request, a);
  if (r < 0) throw fail("ioctl", `fd ${fd}, request 0x${request.toString(16)}`);
  return r;
}

/** socketpair(2): two connected sockets, close-on-exec. */
export function socketpair(domain = AF_UNIX, type = SOCK_STREAM): [number, number] {
  const fds = new Int32Array(2);
  if (libc().socketpair(domain, type | SOCK_CLOEXEC, 0, fds) !== 0) throw fail("socketpair", `domain ${domain}`);
  return [fds[0] ?? -1, fds[1] ?? -1];
}

/** setsockopt(2) for an int-valued option. */
export function setSocketOption(fd: number, level: number, name: number, value: number): void {
  const v = new Int32Array([value]);
  if (libc().setsockopt(fd, level, name, v, 4) !== 0) throw fail("setsockopt", `fd ${fd}, option ${name}`);
}

/** getsockopt(2) for an int-valued option. */
export function getSocketOption(fd: number, level: number, name: number): number {
  const v = new Int32Array(1);
  const len = new Uint32Array([4]);
  if (libc().getsockopt(fd, level, name, v, len) !== 0) throw fail("getsockopt", `fd ${fd}, option ${name}`);
  return v[0] ?? 0;
}

/**
 * recv(2) with MSG_DONTWAIT into `dest`: the bytes read, 0 at end of stream, or -1 when nothing is waiting now.
 * Other failures (the peer reset the connection) throw.
 */
export function recvNonBlocking(fd: number, dest: Uint8Array): number {
  for (;;) {
    const r = Number(libc().recv(fd, dest, dest.length, MSG_DONTWAIT));
    if (r >= 0) return r;
    const errno = lastErrno();
    if (errno === EAGAIN) return -1;
    if (errno !== EINTR) throw new LibcError("recv", errno, `fd ${fd}`);
  }
}
