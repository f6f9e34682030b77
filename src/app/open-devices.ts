/**
 * Opening a plan's devices, in order, and registering each with the host under its name. A failure leaves the
 * devices opened before it in the host, so that stopping the host flushes and closes them. Each device logs
 * through the host (its lines carry its name; its warnings become its events) and tells it how it opened.
 */
import { accessSync, constants, existsSync, mkdirSync, statSync } from "node:fs";
import { type DeviceNotice, createDevice, deviceKinds, isDeviceKind } from "../devices/index.ts";
import type { Host } from "../engine/host.ts";
import type { DeviceSpec } from "./plan.ts";

/** A device could not be opened; `cause` is what its kind threw (which decides the exit code). */
export class OpenDeviceError extends Error {
  constructor(
    readonly device: string,
    override readonly cause: unknown,
  ) {
    super(`device "${device}": ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
  }
}

/** The store directory cannot hold a store: a mistake in the command (exit 2), said in one line with the fix. */
export class StoreDirError extends Error {}

/** Makes sure `dir` is a directory this process can create files in (creating it, private, when missing). */
function prepareStoreDir(dir: string): void {
  const fix = "give --store-dir a directory this user can write, or leave it out for the default";
  if (dir.trim() === "") throw new StoreDirError(`--store-dir is empty: ${fix}`);
  if (existsSync(dir) && !statSync(dir).isDirectory()) throw new StoreDirError(`--store-dir ${dir} is not a directory: ${fix}`);
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (error) {
    const code = (error as { code?: string }).code ?? "error";
    const why = code === "ENOTDIR" ? "a file is in the way" : code === "EACCES" || code === "EPERM" ? "permission denied" : code === "EROFS" ? "the file system is read-only" : code === "ENOSPC" ? "the disk is full" : code;
    throw new StoreDirError(`--store-dir ${dir} cannot be created (${why}): ${fix}`);
  }
  try {
    accessSync(dir, constants.W_OK | constants.X_OK);
  } catch {
    throw new StoreDirError(`--store-dir ${dir} is not writable by this user: ${fix}`);
  }
}

/** Creates every device in order and adds it to `host`; throws OpenDeviceError naming the first that fails. */
export async function openDevices(specs: readonly DeviceSpec[], host: Host): Promise<void> {
  for (const spec of specs) {
    try {
      // Private by default: stores hold users' data (and keys).
      if (isDeviceKind(spec.kind) && deviceKinds[spec.kind].persistent && spec.options.storeDir !== undefined) {
        prepareStoreDir(spec.options.storeDir);
      }
      // What the device says while it opens is kept until it is in the host, then told as its events.
      const early: DeviceNotice[] = [];
      let notify = (notice: DeviceNotice): void => {
        early.push(notice);
      };
      const device = await createDevice(spec.kind, { ...spec.options, log: host.deviceLog(spec.name), notify: (notice) => notify(notice) });
      try {
        host.add(spec.name, device);
      } catch (error) {
        await device.close();
        throw error;
      }
      notify = (notice): void => host.notice(spec.name, notice);
      for (const notice of early) host.notice(spec.name, notice);
    } catch (error) {
      throw new OpenDeviceError(spec.name, error);
    }
  }
}
