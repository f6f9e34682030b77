/**
 * The reattach record: a small JSON file beside a persistent store saying which /dev/nbdN it is attached to, so a
 * daemon restarted after a crash finds the device the kernel kept waiting (dead-connection timeout) and
 * reconfigures it with fresh sockets instead of attaching a second device to the same data.
 */
import { readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";

export interface AttachmentRecord {
  readonly version: 1;
  readonly device: string;
  readonly index: number;
  /** The backend identifier given to the kernel; a reattach must name the same one. */
  readonly backend: string;
  readonly connections: number;
  /** The daemon that attached it. */
  readonly pid: number;
  readonly attachedAt: string;
}

/** The record in `path`, or undefined when there is none or it cannot be read as one (then it is ignored). */
export function readAttachmentRecord(path: string): AttachmentRecord | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, "utf8"));
  } catch {
    return undefined;
  }
  if (typeof parsed !== "object" || parsed === null) return undefined;
  const r = parsed as Partial<AttachmentRecord>;
  const valid =
    r.version === 1 &&
    typeof r.device === "string" &&
    Number.isInteger(r.index) &&
    typeof r.backend === "string" &&
    Number.isInteger(r.connections) &&
    Number.isInteger(r.pid) &&
    typeof r.attachedAt === "string";
  return valid ? (r as AttachmentRecord) : undefined;
}

/** Writes the record atomically (a crash leaves the old record or the new one, never half of one). */
export function writeAttachmentRecord(path: string, record: AttachmentRecord): void {
  const partial = `${path}.partial`;
  writeFileSync(partial, `${JSON.stringify(record, null, 2)}\n`, { mode: 0o600 });
  renameSync(partial, path);
}

export function removeAttachmentRecord(path: string): void {
  rmSync(path, { force: true });
}
