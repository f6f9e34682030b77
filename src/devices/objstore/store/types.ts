/**
 * The object store a volume lives in: the calls the objstore device needs, nothing more, so that a backend (local,
 * S3, Azure, Swift, SFTP) is one small class that implements all of them. Keys are plain strings with `/`
 * separators; bodies are whole objects. Every backend passes the shared store conformance suite
 * (tests/devices/store-conformance.ts).
 */

/** What `head` and `list` report about one object. */
export interface ObjectInfo {
  readonly key: string;
  /** Size in bytes of the whole object. */
  readonly size: number;
  /** Changes whenever the object is replaced (S3 ETag, or the local backend's inode/mtime/size). Compared as text. */
  readonly etag: string;
}

/** Bytes `offset .. offset+length-1` of an object (an HTTP Range). */
export interface ByteRange {
  readonly offset: number;
  readonly length: number;
}

export interface GetResult {
  /** The object's bytes, or the requested range of them (shorter when the range runs past the end). */
  readonly body: Uint8Array;
  readonly etag: string;
  /** Size of the whole object, whatever range was asked for. */
  readonly size: number;
}

/**
 * What `createIfAbsent` did. `exists`: an object was already under the key, and nothing was written. `unsupported`:
 * this store cannot create conditionally (Swift's s3api answers 501, some S3-compatible servers ignore the header),
 * and nothing was written; `reason` says why in words. A caller that needs mutual exclusion (the writer lease) must
 * then fall back to something weaker and say so: a plain `put` cannot tell two writers apart.
 */
export type CreateResult =
  | { readonly outcome: "created"; readonly etag: string }
  | { readonly outcome: "exists" }
  | { readonly outcome: "unsupported"; readonly reason: string };

export interface ObjectStore {
  /** Where the objects are, for logs and the dashboard: kind, endpoint, bucket. Never contains a secret. */
  readonly description: string;
  /** Makes the store usable: creates the bucket (or directory) when it is missing. Called once before anything else. */
  prepare(): Promise<void>;
  /**
   * Stores `body` under `key`, replacing any object there, atomically (never a torn object). Resolves once durable.
   * `md5`: the body's MD5 digest when the caller has it (see `putDigest`), so the store does not hash it again.
   */
  put(key: string, body: Uint8Array, md5?: Uint8Array): Promise<{ readonly etag: string }>;
  /**
   * Set when `put` sends the body's MD5 for the service to check it against (S3's Content-MD5, Swift's ETag): a
   * caller that can compute it off the serving thread passes it to `put`.
   */
  readonly putDigest?: "md5";
  /**
   * Stores `body` under `key` only if no object is there. Atomic unless `createCaveat` says otherwise: of several
   * racing creates of one key (from any number of processes or hosts) exactly one gets `created`, the others `exists`.
   * A create that starts after another has finished always gets `exists`.
   */
  createIfAbsent(key: string, body: Uint8Array): Promise<CreateResult>;
  /**
   * Set when `createIfAbsent` is not atomic against creates that overlap in time (Swift checks `If-None-Match: *`
   * before the upload, so overlapping creates can all succeed): why, in words, for the caller to log or refuse.
   */
  readonly createCaveat?: string;
  /** The object (or a range of it); undefined when there is no object under `key`. */
  get(key: string, range?: ByteRange): Promise<GetResult | undefined>;
  /** The object's size and etag; undefined when there is no object under `key`. */
  head(key: string): Promise<ObjectInfo | undefined>;
  /** Removes the object; removing a missing object is not an error. */
  delete(key: string): Promise<void>;
  /** Every object whose key starts with `prefix`, in the byte order of the keys; pages through the store's answers. */
  list(prefix: string): AsyncIterable<ObjectInfo>;
  /** Releases connections and handles. Idempotent. */
  close(): void;
}

/**
 * Why a store call failed, the same way for every backend:
 * - `not-found`: the bucket, container or directory itself is missing (a missing *object* is no error: get and head
 *   give undefined, delete succeeds);
 * - `unauthorised`: the credentials are wrong or may not do this (401/403, a refused SSH key): fix the configuration;
 * - `unavailable`: the store is unreachable, overloaded or throttling (network errors, timeouts, 5xx, 429): trying
 *   again later can succeed;
 * - `other`: anything else (a malformed request, a full disk, a key the store refuses).
 */
export type ObjectStoreErrorKind = "not-found" | "unauthorised" | "unavailable" | "other";

export type ObjectStoreOperation = "prepare" | "put" | "create" | "get" | "head" | "delete" | "list";

/**
 * A failed store call. The uploader keeps retrying `unavailable` failures with backoff (`retryable`) and reports the
 * others loudly; an `unauthorised` failure while opening a volume is a usage error (exit 2).
 */
export class ObjectStoreError extends Error {
  constructor(
    readonly operation: ObjectStoreOperation,
    readonly key: string,
    readonly kind: ObjectStoreErrorKind,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "ObjectStoreError";
  }

  /** Whether trying again later can succeed: the store was unreachable, overloaded or throttling. */
  get retryable(): boolean {
    return this.kind === "unavailable";
  }
}

/** The ObjectStoreError (of `kind`, when given) in `err` or its chain of causes (a device may wrap store errors). */
export function findObjectStoreError(err: unknown, kind?: ObjectStoreErrorKind): ObjectStoreError | undefined {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) {
    if (e instanceof ObjectStoreError && (kind === undefined || e.kind === kind)) return e;
  }
  return undefined;
}

/** Refuses a range that is not two non-negative safe integers (a caller's bug, not the store's). */
export function checkRange(operation: ObjectStoreOperation, key: string, range: ByteRange | undefined): void {
  if (range === undefined) return;
  const ok = Number.isSafeInteger(range.offset) && Number.isSafeInteger(range.length) && range.offset >= 0 && range.length >= 0;
  if (!ok) throw new ObjectStoreError(operation, key, "other", `object store: ${operation} "${key}": bad range offset ${range.offset} length ${range.length}`);
}
