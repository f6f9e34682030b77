/**
 * Opening the file behind a file device: create it sparse when missing, check an existing file's size against
 * the one asked for, and take an exclusive lock so that two daemons never serve the same file.
 */
import fs from "node:fs";
import { FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, LOCK_EX, LOCK_NB, LOCK_SH, LibcError, fallocate, flock } from "../../ffi/libc.ts";
import { resolveGeometry } from "../geometry.ts";
import { errorCode } from "../io-error.ts";

export interface OpenedFile {
  readonly fd: number;
  readonly size: number;
  readonly blockSize: number;
  /** The filesystem punches holes (checked once at open, harmlessly, past the end of the file). */
  readonly canPunch: boolean;
}

/**
 * Opens (or creates) `path`; see FileDeviceOptions for the rules on `size`. `readOnly` opens an existing file for
 * reading only, under a shared lock (other read-only opens may share it; a writer's exclusive lock refuses it), and
 * neither creates, resizes nor probes it.
 */
export function openStore(path: string, size: number | undefined, blockSize: number | undefined, readOnly = false): OpenedFile {
  let fd: number;
  let created = false;
  try {
    fd = fs.openSync(path, readOnly ? "r" : "r+");
  } catch (e) {
    if (errorCode(e) !== "ENOENT") throw e;
    if (readOnly) throw new Error(`file device: ${path} does not exist, and --read-only never creates an image; check --store-dir and --store-name`);
    if (size === undefined) {
      throw new Error(`file device: ${path} does not exist and no size was given; pass --store-size to create it`);
    }
    // Validate before creating, so that a bad size leaves no stray file behind.
    resolveGeometry("file", size, blockSize);
    fd = fs.openSync(path, "wx+", 0o600);
    created = true;
  }
  try {
    lock(fd, path, readOnly);
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new Error(`file device: ${path} is not a regular file; point --store-dir at a directory of images`);
    if (created) {
      // ftruncate makes a sparse file: no zeros are written, and the blocks are allocated on first write.
      fs.ftruncateSync(fd, size ?? 0);
    } else if (size !== undefined && size !== st.size) {
      throw new Error(
        `file device: ${path} is ${st.size} bytes but --store-size asks for ${size}; refusing to resize an ` +
          `existing image (drop --store-size to use its size, or pick another --store-name)`,
      );
    }
    const actual = created ? (size ?? 0) : st.size;
    return { fd, size: actual, blockSize: resolveGeometry("file", actual, blockSize), canPunch: !readOnly && probePunch(fd, actual) };
  } catch (e) {
    fs.closeSync(fd);
    if (created) fs.rmSync(path, { force: true });
    throw e;
  }
}

function lock(fd: number, path: string, shared: boolean): void {
  try {
    flock(fd, (shared ? LOCK_SH : LOCK_EX) | LOCK_NB);
  } catch (e) {
    if (e instanceof LibcError && e.code === "EAGAIN") {
      throw new Error(
        `file device: ${path} is locked by another process (another usbd-tui serving it?); stop that one first or ` +
          `pick another --store-name`,
      );
    }
    // A filesystem without flock support (some network filesystems) still works, just unguarded.
    if (!(e instanceof LibcError)) throw e;
  }
}

/** Punching a hole past the end of the file changes nothing, but says whether the filesystem can punch at all. */
function probePunch(fd: number, size: number): boolean {
  try {
    fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, size, 4096);
    return true;
  } catch {
    return false;
  }
}
