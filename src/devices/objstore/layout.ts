/**
 * Names shared by the objstore device's parts: the settings a volume is created with, where its objects live in the
 * store and where its cache lives on local disk.
 */
import path from "node:path";

export const OBJSTORE_COMPRESSIONS = ["lz4", "gzip", "identity"] as const;
export type ObjstoreCompression = (typeof OBJSTORE_COMPRESSIONS)[number];

export const AES_MODES = ["aes-gcm", "aes-ctr", "identity"] as const;
export type AesMode = (typeof AES_MODES)[number];

export const OBJSTORE_KINDS = ["s3", "local", "b2", "google", "oracle", "azure", "swift", "sftp"] as const;
export type ObjstoreKind = (typeof OBJSTORE_KINDS)[number];

export const FLUSH_MODES = ["local", "remote"] as const;
export type FlushMode = (typeof FLUSH_MODES)[number];

export function isObjstoreCompression(name: string): name is ObjstoreCompression {
  return (OBJSTORE_COMPRESSIONS as readonly string[]).includes(name);
}
export function isAesMode(name: string): name is AesMode {
  return (AES_MODES as readonly string[]).includes(name);
}
export function isObjstoreKind(name: string): name is ObjstoreKind {
  return (OBJSTORE_KINDS as readonly string[]).includes(name);
}
export function isFlushMode(name: string): name is FlushMode {
  return (FLUSH_MODES as readonly string[]).includes(name);
}

/** The key of the volume's manifest: `<storeName>/manifest.json`. */
export function manifestKey(storeName: string): string {
  return `${storeName}/manifest.json`;
}

const hex = (n: number, digits: number) => n.toString(16).padStart(digits, "0");

/** Prefix of a volume's log objects; a log object is `<volume>/log/<seq as 16 hex>.<epoch as 8 hex>`. */
export function logPrefix(storeName: string): string {
  return `${storeName}/log/`;
}
export function logKey(storeName: string, seq: number, epoch: number): string {
  return `${logPrefix(storeName)}${hex(seq, 16)}.${hex(epoch, 8)}`;
}

/** Prefix of a volume's checkpoints, named like log objects by the last sequence number they cover. */
export function checkpointPrefix(storeName: string): string {
  return `${storeName}/checkpoints/`;
}
export function checkpointKey(storeName: string, seq: number, epoch: number): string {
  return `${checkpointPrefix(storeName)}${hex(seq, 16)}.${hex(epoch, 8)}`;
}

/** `<seq>.<epoch>` of a log object or checkpoint key after its prefix, or undefined for any other name. */
export function parseSequenced(name: string): { readonly seq: number; readonly epoch: number } | undefined {
  const m = /^([0-9a-f]{16})\.([0-9a-f]{8})$/.exec(name);
  if (m === null) return undefined;
  const seq = Number.parseInt(m[1]!, 16);
  return Number.isSafeInteger(seq) ? { seq, epoch: Number.parseInt(m[2]!, 16) } : undefined;
}

/** Writer leases: `<volume>/lease/<epoch as 8 hex>`, and `<...>.released` once that writer closed cleanly. */
export function leasePrefix(storeName: string): string {
  return `${storeName}/lease/`;
}
export function leaseKey(storeName: string, epoch: number): string {
  return `${leasePrefix(storeName)}${hex(epoch, 8)}`;
}
export function releasedKey(storeName: string, epoch: number): string {
  return `${leaseKey(storeName, epoch)}.released`;
}

/** Snapshots: `<volume>/snapshots/<name>`; clones made from them: `<volume>/clones/<clone volume>`. */
export function snapshotPrefix(storeName: string): string {
  return `${storeName}/snapshots/`;
}
export function snapshotKey(storeName: string, name: string): string {
  return `${snapshotPrefix(storeName)}${name}`;
}
export function clonePrefix(storeName: string): string {
  return `${storeName}/clones/`;
}
export function cloneKey(storeName: string, clone: string): string {
  return `${clonePrefix(storeName)}${clone}`;
}

/** The key of an object of the old segment format, used only to recognise such a volume. */
export function oldSegmentPrefix(storeName: string): string {
  return `${storeName}/segments/`;
}

/** Snapshot and volume names: what fits in a key component and a file name. */
export function isValidName(name: string): boolean {
  return /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(name) && !name.endsWith(".released");
}

/**
 * Local files of a volume in --store-dir: the cache (one slot per log object with local bytes) and its catalog
 * (bun:sqlite). A snapshot opened read-only has its own, named `<volume>@<snapshot>`.
 */
export function cachePaths(storeDir: string, storeName: string, snapshot?: string): { readonly cache: string; readonly db: string } {
  const base = snapshot === undefined ? storeName : `${storeName}@${snapshot}`;
  return {
    cache: path.join(storeDir, `${base}.objstore.cache`),
    db: path.join(storeDir, `${base}.objstore.db`),
  };
}
