/** Opening a store file with an exclusive lock, shared by the store-backed kinds (dedup, objstore). */
import fs from "node:fs";
import { LOCK_EX, LOCK_NB, LOCK_SH, LibcError, flock } from "../ffi/libc.ts";

/** Another process holds the store's lock (a daemon serving it, or `check`). */
export class StoreLockedError extends Error {
  override readonly name = "StoreLockedError";
}

/**
 * Opens (or creates, mode 0600) `path` and takes an exclusive lock on it, so that two daemons, or a daemon and
 * `check`, never work on one store. `kind` names the device in the error a second opener gets. `readOnly` opens an
 * existing file for reading under a shared lock: read-only opens share it, a writer is refused (and refuses it).
 */
export function openLocked(path: string, create: boolean, kind: string, readOnly = false): number {
  const fd = fs.openSync(path, create ? "wx+" : readOnly ? "r" : "r+", 0o600);
  try {
    flock(fd, (readOnly ? LOCK_SH : LOCK_EX) | LOCK_NB);
  } catch (e) {
    fs.closeSync(fd);
    if (e instanceof LibcError && e.code === "EAGAIN") {
      throw new StoreLockedError(`${kind} device: ${path} is locked by another process (another usbd-tui serving it?); stop that one first`);
    }
    throw e;
  }
  return fd;
}
