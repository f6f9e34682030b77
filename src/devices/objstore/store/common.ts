/** Small pieces several backends share: key checks for the file-tree backends, etags, empty ranges. */
import { ObjectStoreError, type GetResult, type ObjectInfo, type ObjectStoreOperation } from "./types.ts";

/** Temporary files start with this; keys may not, so a listing never shows a put in progress (or one a crash left). */
export const TEMP_PREFIX = ".usbd-tmp-";

/**
 * The `/`-separated parts of `key`, after checking it can name a file inside a directory tree (local, sftp): no
 * `.`/`..`/empty components, no leading or trailing `/`, nothing that looks like a temporary file.
 */
export function keyParts(operation: ObjectStoreOperation, key: string, where: string, shown = key): string[] {
  const parts = key.split("/");
  const bad = key === "" || key.includes("\0") || parts.some((p) => p === "" || p === "." || p === ".." || p.startsWith(TEMP_PREFIX));
  if (bad) {
    throw new ObjectStoreError(operation, shown, "other", `object store: ${operation}: key "${shown}" is not allowed in ${where} (empty, ".", ".." or "${TEMP_PREFIX}" components, or a leading or trailing "/")`);
  }
  return parts;
}

/** ETags compared as text, without the quotes (and weak marker) HTTP puts around them. */
export function bareEtag(etag: string | undefined | null): string {
  return (etag ?? "").replace(/^(W\/)?"(.*)"$/, "$2");
}

/** An empty range of `key` (a zero-length one, or one past the end): its size and etag, or undefined when missing. */
export async function emptyRange(store: { head(key: string): Promise<ObjectInfo | undefined> }, key: string): Promise<GetResult | undefined> {
  const info = await store.head(key);
  return info === undefined ? undefined : { body: new Uint8Array(0), etag: info.etag, size: info.size };
}
