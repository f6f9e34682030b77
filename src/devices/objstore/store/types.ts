/**
 * The object store a volume lives in: the five calls the objstore device needs, nothing more, so that a new backend
 * (Azure, Swift, SFTP) is one small class. Keys are plain strings with `/` separators; bodies are whole objects.
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

export interface ObjectStore {
  /** Where the objects are, for logs and the dashboard: kind, endpoint, bucket. Never contains a secret. */
  readonly description: string;
  /** Makes the store usable: creates the bucket (or directory) when it is missing. Called once before anything else. */
  prepare(): Promise<void>;
  /** Stores `body` under `key`, replacing any object there. Resolves once the store has it durably. */
  put(key: string, body: Uint8Array): Promise<{ readonly etag: string }>;
  /** The object (or a range of it); undefined when there is no object under `key`. */
  get(key: string, range?: ByteRange): Promise<GetResult | undefined>;
  /** The object's size and etag; undefined when there is no object under `key`. */
  head(key: string): Promise<ObjectInfo | undefined>;
  /** Removes the object; removing a missing object is not an error. */
  delete(key: string): Promise<void>;
  /** Every object whose key starts with `prefix`, in key order. */
  list(prefix: string): AsyncIterable<ObjectInfo>;
  /** Releases connections and handles. Idempotent. */
  close(): void;
}

/**
 * A failed store call. `retryable` says whether trying again later can succeed (network down, 5xx, throttling) or
 * not (bad credentials, no permission, a malformed request): the uploader keeps retrying the first kind forever with
 * backoff and reports the second kind loudly.
 */
export class ObjectStoreError extends Error {
  constructor(
    readonly operation: "prepare" | "put" | "get" | "head" | "delete" | "list",
    readonly key: string,
    readonly retryable: boolean,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "ObjectStoreError";
  }
}
