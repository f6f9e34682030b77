/** Turning filesystem and libc errors into the DeviceError a client should see, shared by the store-backed kinds. */
import { DeviceError, type DeviceErrorCode } from "./device.ts";

/** The `code` of a Node-style filesystem error or a LibcError ("ENOENT"), if it has one. */
export function errorCode(e: unknown): string | undefined {
  return e instanceof Error ? (e as NodeJS.ErrnoException).code : undefined;
}

const CODES: Readonly<Record<string, DeviceErrorCode>> = { ENOSPC: "ENOSPC", EDQUOT: "ENOSPC", EFBIG: "EOVERFLOW", EROFS: "EPERM" };

/** A DeviceError for a failed `call` on `path`: a full disk stays ENOSPC, anything unknown is EIO; the cause is kept. */
export function ioError(kind: string, call: string, path: string, e: unknown): DeviceError {
  if (e instanceof DeviceError) return e;
  const code = errorCode(e);
  const message = e instanceof Error ? e.message : String(e);
  return new DeviceError(CODES[code ?? ""] ?? "EIO", `${kind} device ${call} on ${path}: ${message}`);
}
