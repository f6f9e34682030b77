/**
 * Linux errno numbers to their symbolic names and messages, so that a failed libc call can say
 * "EOPNOTSUPP (Operation not supported)" instead of a bare number. Values are the x86-64/aarch64 generic ones.
 */

const table: ReadonlyArray<readonly [number, string, string]> = [
  [1, "EPERM", "Operation not permitted"],
  [2, "ENOENT", "No such file or directory"],
  [3, "ESRCH", "No such process"],
  [4, "EINTR", "Interrupted system call"],
  [5, "EIO", "Input/output error"],
  [6, "ENXIO", "No such device or address"],
  [7, "E2BIG", "Argument list too long"],
  [9, "EBADF", "Bad file descriptor"],
  [11, "EAGAIN", "Resource temporarily unavailable"],
  [12, "ENOMEM", "Cannot allocate memory"],
  [13, "EACCES", "Permission denied"],
  [14, "EFAULT", "Bad address"],
  [16, "EBUSY", "Device or resource busy"],
  [17, "EEXIST", "File exists"],
  [19, "ENODEV", "No such device"],
  [20, "ENOTDIR", "Not a directory"],
  [21, "EISDIR", "Is a directory"],
  [22, "EINVAL", "Invalid argument"],
  [24, "EMFILE", "Too many open files"],
  [25, "ENOTTY", "Inappropriate ioctl for device"],
  [27, "EFBIG", "File too large"],
  [28, "ENOSPC", "No space left on device"],
  [29, "ESPIPE", "Illegal seek"],
  [30, "EROFS", "Read-only file system"],
  [32, "EPIPE", "Broken pipe"],
  [34, "ERANGE", "Numerical result out of range"],
  [38, "ENOSYS", "Function not implemented"],
  [61, "ENODATA", "No data available"],
  [71, "EPROTO", "Protocol error"],
  [75, "EOVERFLOW", "Value too large for defined data type"],
  [88, "ENOTSOCK", "Socket operation on non-socket"],
  [93, "EPROTONOSUPPORT", "Protocol not supported"],
  [95, "EOPNOTSUPP", "Operation not supported"],
  [97, "EAFNOSUPPORT", "Address family not supported by protocol"],
  [98, "EADDRINUSE", "Address already in use"],
  [104, "ECONNRESET", "Connection reset by peer"],
  [107, "ENOTCONN", "Transport endpoint is not connected"],
  [108, "ESHUTDOWN", "Cannot send after transport endpoint shutdown"],
  [110, "ETIMEDOUT", "Connection timed out"],
  [111, "ECONNREFUSED", "Connection refused"],
  [122, "EDQUOT", "Disk quota exceeded"],
];

const byNumber = new Map<number, { readonly name: string; readonly message: string }>(
  table.map(([n, name, message]) => [n, { name, message }]),
);
const byName = new Map<string, number>(table.map(([n, name]) => [name, n]));

/** The symbolic name of an errno ("ENOTTY"), or "errno N" for one the table lacks. */
export function errnoName(errno: number): string {
  return byNumber.get(errno)?.name ?? `errno ${errno}`;
}

/** "EOPNOTSUPP (Operation not supported)", or "errno N" for an unknown number. */
export function describeErrno(errno: number): string {
  const e = byNumber.get(errno);
  return e ? `${e.name} (${e.message})` : `errno ${errno}`;
}

/** The number of a named errno, e.g. errnoNumber("ENXIO") === 6. */
export function errnoNumber(name: string): number | undefined {
  return byName.get(name);
}
