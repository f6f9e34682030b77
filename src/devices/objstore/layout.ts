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

/** The key of one segment's object: `<storeName>/segments/<index as 16 hex digits>`, so listings sort by index. */
export function segmentKey(storeName: string, segment: number): string {
  return `${storeName}/segments/${segment.toString(16).padStart(16, "0")}`;
}

/** The prefix every segment key of a volume starts with. */
export function segmentPrefix(storeName: string): string {
  return `${storeName}/segments/`;
}

/** Local files of a volume in --store-dir: the cache (segment slots) and its catalog (bun:sqlite). */
export function cachePaths(storeDir: string, storeName: string): { readonly cache: string; readonly db: string } {
  return {
    cache: path.join(storeDir, `${storeName}.objstore.cache`),
    db: path.join(storeDir, `${storeName}.objstore.db`),
  };
}
