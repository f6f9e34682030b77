/** Shared by the objstore suites: a temporary store directory, an s3rver on loopback, and device factories. */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { openObjstoreDevice, type ObjstoreDevice, type ObjstoreDeviceOptions } from "../../src/devices/objstore/index.ts";
import { s3ServerConfigJson, type S3Server } from "../helpers/s3-server.ts";

export type Backend = "local" | "s3";

/** A fresh directory under the system temp dir; the caller removes it. */
export function tempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `usbd-${prefix}-`));
}

/** Options that put a volume in `backend`: a directory under `objectsDir`, or the s3rver `server`. */
export function backendOptions(backend: Backend, objectsDir: string, server: S3Server | undefined): Partial<ObjstoreDeviceOptions> {
  if (backend === "local") return { kind: "local", config: JSON.stringify({ path: objectsDir }) };
  if (server === undefined) throw new Error("the s3 backend needs the s3rver");
  return { kind: "s3", config: s3ServerConfigJson(server) };
}

/** A gauge's value from the device's stats. */
export function gauge(dev: ObjstoreDevice, name: string): number {
  const found = dev.stats().gauges.find((g) => g.name === name);
  if (found === undefined) throw new Error(`no gauge "${name}"`);
  return found.value;
}

/** Random bytes (crypto.getRandomValues takes at most 64 KiB at a time). */
export function randomBytes(length: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i += 65536) crypto.getRandomValues(out.subarray(i, Math.min(length, i + 65536)));
  return out;
}

export { openObjstoreDevice };
