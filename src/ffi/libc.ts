/**
 * libc through bun:ffi: the one symbol table every binding in src/ffi calls, the errno-carrying LibcError, and
 * the file calls Node's fs module lacks (fallocate, SEEK_DATA/SEEK_HOLE, flock, ioctl). Every call returns a value
 * or throws a LibcError naming the call, its argument and the errno.
 */
import { dlopen, FFIType, ptr as pointerOf, read, type Pointer } from "bun:ffi";
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

export const O_RDONLY = 0;
export const O_RDWR = 2;
export const O_CLOEXEC = 0o2000000;

const ENXIO = 6;

/** A failed libc call; `code` is the errno name ("EOPNOTSUPP"), like Node's fs errors. */
export class LibcError extends Error {
  constructor(
    readonly call: string,
    readonly errno: number,
    /** What the call was made on ("fd 7", a path): part of the message. */
    readonly detail: string,
  ) {
    super(`${call}(${detail}): ${describeErrno(errno)}`);
    this.name = "LibcError";
  }

  get code(): string {
    return errnoName(this.errno);
  }
}

const { i32, u32, i64, u64, i64_fast, ptr, cstring } = FFIType;

function load() {
  return dlopen("libc.so.6", {
    __errno_location: { args: [], returns: ptr },
    open: { args: [cstring, i32, u32], returns: i32 },
    close: { args: [i32], returns: i32 },
    // Fixed three-argument form, as for ioctl: the only command used (F_DUPFD_CLOEXEC) takes an int.
    fcntl: { args: [i32, i32, i32], returns: i32 },
    fallocate: { args: [i32, i32, i64, i64], returns: i32 },
    // i64_fast: offsets come back as plain numbers (they fit: files stay below 2^53 bytes).
    lseek: { args: [i32, i64, i32], returns: i64_fast },
    flock: { args: [i32, i32], returns: i32 },
    // Fixed three-argument form: variadic calls are not portable through FFI, and every ioctl we use takes one arg.
    ioctl: { args: [i32, u64, ptr], returns: i32 },
    socket: { args: [i32, i32, i32], returns: i32 },
    connect: { args: [i32, ptr, u32], returns: i32 },
    bind: { args: [i32, ptr, u32], returns: i32 },
    socketpair: { args: [i32, i32, i32, ptr], returns: i32 },
    send: { args: [i32, ptr, u64, i32], returns: i64_fast },
    recv: { args: [i32, ptr, u64, i32], returns: i64_fast },
    setsockopt: { args: [i32, i32, i32, ptr, u32], returns: i32 },
    getsockopt: { args: [i32, i32, i32, ptr, ptr], returns: i32 },
    listen: { args: [i32, i32], returns: i32 },
    poll: { args: [ptr, u64, i32], returns: i32 },
    getrlimit: { args: [i32, ptr], returns: i32 },
    execve: { args: [cstring, ptr, ptr], returns: i32 },
  });
}

let lib: ReturnType<typeof load> | undefined;

const RLIMIT_NOFILE = 7;

/** The soft limit on open descriptors (RLIMIT_NOFILE): how many this process may hold at once. */
export function descriptorLimit(): number {
  // struct rlimit { rlim_t rlim_cur; rlim_t rlim_max; }: two unsigned 64-bit fields.
  const limits = new BigUint64Array(2);
  if (libc().getrlimit(RLIMIT_NOFILE, limits) !== 0) throw failure("getrlimit", "RLIMIT_NOFILE");
  const soft = limits[0] ?? 0n;
  return soft > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(soft);
}

/** libc, opened on first use so that importing this module costs nothing for code paths that never call it. */
export function libc(): ReturnType<typeof load>["symbols"] {
  lib ??= load();
  return lib.symbols;
}

/** The current errno. Call it first thing after a failing call, before anything else can overwrite errno. */
export function lastErrno(): number {
  const p = libc().__errno_location();
  return p === null ? 0 : read.i32(p, 0);
}

/** The LibcError for the call that just failed (reads errno now). */
export function failure(call: string, detail: string): LibcError {
  return new LibcError(call, lastErrno(), detail);
}

/**
 * execve(2): replaces this process's program (same pid, descriptors, signal dispositions reset) with `path` run with
 * `argv` and `env`. Returns only on failure, with the errno.
 */
export function execProgram(path: string, argv: readonly string[], env: Readonly<Record<string, string>>): number {
  const strings = [...argv.map(cString), ...Object.entries(env).map(([k, v]) => cString(`${k}=${v}`))];
  // Two NULL-terminated arrays of pointers into `strings`, which stay referenced until the call returns.
  const table = new BigUint64Array(strings.length + 2);
  strings.forEach((s, i) => {
    table[i < argv.length ? i : i + 1] = BigInt(pointerOf(s));
  });
  const envAt = (argv.length + 1) * 8;
  libc().execve(cString(path), table, pointerOf(table, envAt));
  return lastErrno();
}

/** A NUL-terminated copy of `text` for `const char *` arguments. */
export function cString(text: string): Buffer {
  return Buffer.from(`${text}\0`, "utf8");
}

/** open(2); `flags` are O_* values (O_CLOEXEC is always added). Returns the new descriptor. */
export function openPath(path: string, flags: number, mode = 0): number {
  const fd = libc().open(cString(path), flags | O_CLOEXEC, mode);
  if (fd < 0) throw failure("open", path);
  return fd;
}

/** close(2). */
export function closeFd(fd: number): void {
  if (libc().close(fd) !== 0) throw failure("close", `fd ${fd}`);
}

/** fallocate(2): allocate, punch (FALLOC_FL_PUNCH_HOLE|FALLOC_FL_KEEP_SIZE) or zero (FALLOC_FL_ZERO_RANGE). */
export function fallocate(fd: number, mode: number, offset: number, length: number): void {
  if (libc().fallocate(fd, mode, offset, length) !== 0) throw failure("fallocate", `fd ${fd}`);
}

/** lseek(2) returning the new offset. */
export function lseek(fd: number, offset: number, whence: number): number {
  const r = Number(libc().lseek(fd, offset, whence));
  if (r < 0) throw failure("lseek", `fd ${fd}`);
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
  if (libc().flock(fd, operation) !== 0) throw failure("flock", `fd ${fd}`);
}

/**
 * ioctl(2) with one argument: a buffer the kernel reads or fills, or a plain integer (e.g. NBD_SET_SOCK's fd).
 * Returns the call's non-negative result.
 */
export function ioctl(fd: number, request: number, arg: NodeJS.TypedArray | number | null): number {
  const a = typeof arg === "number" ? (arg as Pointer) : arg;
  const r = libc().ioctl(fd, request, a);
  if (r < 0) throw failure("ioctl", `fd ${fd}, request 0x${request.toString(16)}`);
  return r;
}
