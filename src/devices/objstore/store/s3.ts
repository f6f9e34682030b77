/**
 * The ObjectStore over the S3 API (AWS itself, or any S3-compatible service: B2, GCS interop, Oracle, MinIO...).
 * Every failure becomes an ObjectStoreError that names the call, the key, the endpoint and bucket, and says whether
 * trying again can help; the device does its own backoff, so the SDK retries little and timeouts are short enough
 * that a dead endpoint fails instead of hanging.
 */
import { createHash } from "node:crypto";
import {
  CreateBucketCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  type GetObjectCommandOutput,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type BucketLocationConstraint,
  type S3ClientConfig,
} from "@aws-sdk/client-s3";
import { bareEtag, emptyRange } from "./common.ts";
import {
  ObjectStoreError,
  checkRange,
  type ByteRange,
  type CreateResult,
  type GetResult,
  type ObjectInfo,
  type ObjectStore,
  type ObjectStoreErrorKind,
  type ObjectStoreOperation,
} from "./types.ts";

/** Where an S3ObjectStore's objects are and how it reaches them (config.ts builds these from --objstore-cfg). */
export interface S3ObjectStoreOptions {
  readonly bucket: string;
  /** Base URL of an S3-compatible service; absent: AWS, with the endpoint the SDK derives from the region. */
  readonly endpoint?: string;
  readonly region: string;
  /** Bucket in the path (`endpoint/bucket/key`) instead of the host name; most S3-compatible services want it. */
  readonly pathStyle: boolean;
  /** Absent: the SDK's standard chain (AWS_* environment, ~/.aws files, instance or container roles). */
  readonly credentials?: { readonly accessKeyId: string; readonly secretAccessKey: string; readonly sessionToken?: string };
  /** What the service is called in descriptions and messages (`s3`, `b2`, `google`, `oracle`). */
  readonly label?: string;
  /** Keys asked for per ListObjectsV2 page; S3's maximum (1000) unless a test wants to see paging. */
  readonly listPageSize?: number;
  /** How long connecting may take (ms). */
  readonly connectionTimeoutMs?: number;
  /** How long a connection may sit idle mid-request (ms): a server that stops answering fails after this. */
  readonly idleTimeoutMs?: number;
}

/** errno codes of a failed or dropped connection: the network or the service may be back later. */
const NETWORK_CODES = new Set([
  "ECONNREFUSED", "ECONNRESET", "ECONNABORTED", "ETIMEDOUT", "EPIPE", "ENOTFOUND", "EAI_AGAIN", "EHOSTUNREACH",
  "ENETUNREACH", "ENETDOWN", "EHOSTDOWN", "ENOTCONN", "UND_ERR_SOCKET",
]);
/** Service error codes that mean "slow down" or "try again", whatever the HTTP status. */
const RETRY_CODES = new Set([
  "SlowDown", "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled", "TooManyRequests",
  "TooManyRequestsException", "RequestLimitExceeded", "RequestTimeout", "RequestTimeoutException", "InternalError",
  "ServiceUnavailable", "TimeoutError",
]);
/** Codes that mean the credentials themselves are wrong, so the fix is in the configuration. */
const CREDENTIAL_CODES = new Set([
  "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "TokenRefreshRequired",
  "InvalidClientTokenId", "CredentialsProviderError", "AuthorizationHeaderMalformed",
]);
const CREDENTIAL_FIX = "check access_key_id/secret_key in --objstore-cfg, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in the environment";

interface Classified {
  readonly kind: ObjectStoreErrorKind;
  readonly cause: string;
  readonly status?: number;
  readonly code?: string;
}

function text(value: unknown): string | undefined {
  return typeof value === "string" && value !== "" ? value : undefined;
}

/** What went wrong, in words, and whether trying again later can succeed. */
function classify(err: unknown): Classified {
  if (typeof err !== "object" || err === null) return { kind: "other", cause: String(err) };
  const e = err as { name?: unknown; code?: unknown; Code?: unknown; message?: unknown; syscall?: unknown; $metadata?: { httpStatusCode?: unknown }; $retryable?: unknown };
  const status = typeof e.$metadata?.httpStatusCode === "number" ? e.$metadata.httpStatusCode : undefined;
  // Service errors carry their code as Code and as the name; a HEAD has no body, so only "NotFound"/"Unknown" then.
  const code = text(e.Code) ?? text(e.code) ?? text(e.name);
  const message = (text(e.message) ?? String(err)).replace(/\.$/, "");
  if (status === undefined) {
    const network =
      (code !== undefined && NETWORK_CODES.has(code)) || e.name === "TimeoutError" || typeof e.syscall === "string" ||
      /socket hang up|timed out|ECONN|network|connection (was )?(closed|reset|refused)/i.test(message);
    if (code !== undefined && CREDENTIAL_CODES.has(code)) return { kind: "unauthorised", cause: message, code };
    return { kind: network ? "unavailable" : "other", cause: message, code };
  }
  const shown = message === "UnknownError" || message === code ? "" : `: ${message}`;
  const cause = `${code ?? "error"} (HTTP ${status})${shown}`;
  const retryable = status >= 500 || status === 429 || status === 408 || (code !== undefined && RETRY_CODES.has(code)) || e.$retryable !== undefined || status < 300;
  let kind: ObjectStoreErrorKind = "other";
  if (status === 401 || status === 403 || (code !== undefined && CREDENTIAL_CODES.has(code))) kind = "unauthorised";
  else if (code === "NoSuchBucket") kind = "not-found";
  else if (retryable && status !== 501) kind = "unavailable";
  return { kind, cause, status, code };
}

/** Where the conditional-create probe writes (and at once deletes) its object; no volume's keys start with it. */
const PROBE_PREFIX = ".usbd-probe/";

/** An ObjectStore in one bucket of an S3(-compatible) service; etags are S3's, without the quotes. */
export class S3ObjectStore implements ObjectStore {
  readonly description: string;
  readonly putDigest = "md5";
  private readonly client: S3Client;
  private readonly bucket: string;
  private readonly region: string;
  private readonly pageSize: number;
  private closed = false;
  /** The answer of the conditional-create probe: undefined (supported) or why not; absent until first asked. */
  private conditional: Promise<string | undefined> | undefined;

  constructor(options: S3ObjectStoreOptions) {
    this.bucket = options.bucket;
    this.region = options.region;
    this.pageSize = options.listPageSize ?? 1000;
    const where = options.endpoint ?? `AWS S3 (region ${options.region})`;
    this.description = `${options.label ?? "s3"} bucket "${options.bucket}" at ${where}`;
    const config: S3ClientConfig = {
      region: options.region,
      endpoint: options.endpoint,
      forcePathStyle: options.pathStyle,
      // The device retries with its own backoff forever; SDK retries on top would only multiply the wait.
      maxAttempts: 2,
      // The newer flexible-checksum headers are refused by many S3-compatible servers (s3rver, older MinIO, B2).
      requestChecksumCalculation: "WHEN_REQUIRED",
      responseChecksumValidation: "WHEN_REQUIRED",
      // requestTimeout alone only logs a warning in this SDK; an idle-socket timeout is what turns a server that
      // stops answering into an error, and unlike a total deadline it does not cut a slow but moving upload short.
      requestHandler: { connectionTimeout: options.connectionTimeoutMs ?? 5000, socketTimeout: options.idleTimeoutMs ?? 30000 },
    };
    if (options.credentials !== undefined) config.credentials = { ...options.credentials };
    this.client = new S3Client(config);
    // A request whose body carries a Content-MD5 goes with `x-amz-content-sha256: UNSIGNED-PAYLOAD`, so SigV4 does
    // not hash the body a second time (SHA-256 of each object on the serving thread: 8% of it in an upload round).
    // The body stays bound to the signature: Content-MD5 is a signed header, and the service refuses a body that
    // does not match it (S3, MinIO, Ceph, Swift's s3api and s3rver accept an unsigned payload).
    this.client.middlewareStack.add(
      (next) => async (args) => {
        const headers = (args.request as { headers?: Record<string, string> } | undefined)?.headers;
        if (headers !== undefined && Object.keys(headers).some((h) => h.toLowerCase() === "content-md5")) headers["x-amz-content-sha256"] = "UNSIGNED-PAYLOAD";
        return await next(args);
      },
      { step: "build", name: "usbdUnsignedPayloadWithMd5" },
    );
  }

  /** An ObjectStoreError for `err`, with what to do about it where the cause says. */
  private fail(operation: ObjectStoreOperation, key: string, err: unknown): ObjectStoreError {
    const c = classify(err);
    const subject = key === "" ? operation : `${operation} "${key}"`;
    let hint = "";
    if (c.code !== undefined && CREDENTIAL_CODES.has(c.code)) hint = `; ${CREDENTIAL_FIX}`;
    else if (c.status === 403) hint = `; access denied: ${CREDENTIAL_FIX}, and that these credentials may use bucket "${this.bucket}"`;
    else if (c.status === 301) hint = `; the bucket is in another region than "${this.region}": set region in --objstore-cfg`;
    else if (c.code === "NoSuchBucket") hint = "; prepare() creates it (the volume's create does)";
    else if (c.kind === "unavailable" && c.status === undefined) hint = "; is the endpoint reachable?";
    const message = `object store: ${subject} failed on ${this.description}: ${c.cause}${hint}`;
    return new ObjectStoreError(operation, key, c.kind, message, { cause: err });
  }

  async prepare(): Promise<void> {
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }));
      return;
    } catch (e) {
      const c = classify(e);
      if (c.status !== 404 && c.code !== "NoSuchBucket") throw this.fail("prepare", "", e);
    }
    // us-east-1 is the default location and AWS refuses it spelled out; GCS's "auto" is no location either.
    const located = this.region !== "us-east-1" && this.region !== "auto";
    const configuration = located ? { LocationConstraint: this.region as BucketLocationConstraint } : undefined;
    try {
      await this.client.send(new CreateBucketCommand({ Bucket: this.bucket, CreateBucketConfiguration: configuration }));
    } catch (e) {
      const c = classify(e);
      if (c.code === "BucketAlreadyOwnedByYou") return; // created meanwhile by another daemon of ours
      const error = this.fail("prepare", "", e);
      if (c.code === "BucketAlreadyExists") {
        throw new ObjectStoreError("prepare", "", "other", `${error.message}; the name is taken by another account: choose another bucket in --objstore-cfg`, { cause: e });
      }
      throw error;
    }
  }

  async put(key: string, body: Uint8Array, digest?: Uint8Array): Promise<{ readonly etag: string }> {
    // With checksums only "when required", Content-MD5 is what lets the service refuse a body damaged on the way.
    const md5 = digest === undefined ? createHash("md5").update(body).digest("base64") : Buffer.from(digest).toString("base64");
    try {
      const out = await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: body, ContentLength: body.byteLength, ContentMD5: md5 }));
      if (out.ETag !== undefined) return { etag: bareEtag(out.ETag) };
    } catch (e) {
      throw this.fail("put", key, e);
    }
    const info = await this.head(key);
    if (info === undefined) throw new ObjectStoreError("put", key, "unavailable", `object store: put "${key}" on ${this.description}: the object is missing right after it was stored`);
    return { etag: info.etag };
  }

  /**
   * PUT with `If-None-Match: *` (S3 has honoured it since 2024; so do MinIO, Ceph RGW, R2). Some S3-compatible
   * servers answer 501 (Swift's s3api) and some ignore the header and overwrite: the first call asks the server once,
   * with a probe object created twice, and a store whose server cannot do it answers `unsupported` from then on.
   */
  async createIfAbsent(key: string, body: Uint8Array): Promise<CreateResult> {
    this.conditional ??= this.probeConditionalCreate();
    let unsupported: string | undefined;
    try {
      unsupported = await this.conditional;
    } catch (e) {
      this.conditional = undefined; // the probe itself failed (store unreachable): ask again next time
      throw e;
    }
    if (unsupported !== undefined) return { outcome: "unsupported", reason: unsupported };
    return this.putIfNoneMatch("create", key, body);
  }

  /** Undefined when the server honours `If-None-Match: *` on PUT, else why it cannot create conditionally. */
  private async probeConditionalCreate(): Promise<string | undefined> {
    const probe = `${PROBE_PREFIX}${crypto.randomUUID()}`;
    try {
      const first = await this.putIfNoneMatch("create", probe, new Uint8Array(0));
      if (first.outcome === "unsupported") return first.reason;
      if (first.outcome === "exists") return undefined; // only a server that checks can refuse a fresh random key
      const second = await this.putIfNoneMatch("create", probe, new Uint8Array(0));
      if (second.outcome === "unsupported") return second.reason;
      if (second.outcome === "created") return `${this.description} ignores If-None-Match: * on PUT (a second create of one key succeeded)`;
      return undefined;
    } finally {
      await this.delete(probe).catch(() => {});
    }
  }

  /** One conditional PUT: 412 means the key exists; 501 means the server cannot; 409 (a racing create) asks again. */
  private async putIfNoneMatch(operation: ObjectStoreOperation, key: string, body: Uint8Array): Promise<CreateResult> {
    const md5 = createHash("md5").update(body).digest("base64");
    for (let attempt = 1; ; attempt++) {
      try {
        const out = await this.client.send(
          new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: body, ContentLength: body.byteLength, ContentMD5: md5, IfNoneMatch: "*" }),
        );
        return { outcome: "created", etag: out.ETag !== undefined ? bareEtag(out.ETag) : ((await this.head(key))?.etag ?? "") };
      } catch (e) {
        const c = classify(e);
        if (c.status === 412 || c.code === "PreconditionFailed") return { outcome: "exists" };
        if (c.status === 501 || c.code === "NotImplemented") {
          return { outcome: "unsupported", reason: `${this.description} cannot create conditionally: If-None-Match: * on PUT gave ${c.cause}` };
        }
        // AWS: "409 ConditionalRequestConflict: a conflicting operation occurred, retry"; the retry then sees 412 or wins.
        if ((c.status === 409 || c.code === "ConditionalRequestConflict") && attempt < 3) continue;
        throw this.fail(operation, key, e);
      }
    }
  }

  async get(key: string, range?: ByteRange): Promise<GetResult | undefined> {
    checkRange("get", key, range);
    if (range !== undefined && range.length === 0) return emptyRange(this, key);
    const header = range === undefined ? undefined : `bytes=${range.offset}-${range.offset + range.length - 1}`;
    // The SDK's own retry covers the request, not the body read after it: a body cut off once the answer had begun
    // (a kept-alive connection the server closed mid-response, "aborted") is fetched once more here.
    for (let attempt = 1; ; attempt++) {
      let out: GetObjectCommandOutput;
      try {
        out = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key, Range: header }));
      } catch (e) {
        const c = classify(e);
        if (c.code === "NoSuchKey" || (c.status === 404 && c.code !== "NoSuchBucket")) return undefined;
        // A range that starts at or past the end: the interface's answer is an empty body, not an error.
        if (c.status === 416 && range !== undefined) return emptyRange(this, key);
        throw this.fail("get", key, e);
      }
      let body: Uint8Array;
      try {
        body = out.Body === undefined ? new Uint8Array(0) : await out.Body.transformToByteArray();
      } catch (e) {
        const failure = this.fail("get", key, e);
        if (attempt === 1 && failure.kind === "unavailable") continue;
        throw failure;
      }
      return this.answered(out, body, range);
    }
  }

  /** A GET's answer: the part of `body` that `range` asked for, with the object's etag and size. */
  private answered(out: GetObjectCommandOutput, whole: Uint8Array, range: ByteRange | undefined): GetResult {
    let body = whole;
    const etag = bareEtag(out.ETag);
    const answered = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(out.ContentRange ?? "");
    if (answered !== null && range !== undefined) {
      // Some servers answer a wider range than asked (s3rver gives all of "bytes=0-0"): keep only what was asked.
      const from = range.offset - Number(answered[1]);
      if (from >= 0 && from <= body.byteLength) body = body.subarray(from, Math.min(body.byteLength, from + range.length));
      return { body, etag, size: Number(answered[3]) };
    }
    // No Content-Range: the whole object came back (some servers ignore Range), so cut the range out here.
    const size = body.byteLength;
    if (range !== undefined) body = body.subarray(Math.min(range.offset, size), Math.min(range.offset + range.length, size));
    return { body, etag, size };
  }

  /** An empty range of `key`: its size and etag from a HEAD, or undefined when it is missing. */
  async head(key: string): Promise<ObjectInfo | undefined> {
    try {
      const out = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }));
      return { key, size: out.ContentLength ?? 0, etag: bareEtag(out.ETag) };
    } catch (e) {
      const c = classify(e);
      if (c.status === 404 && c.code !== "NoSuchBucket") return undefined;
      throw this.fail("head", key, e);
    }
  }

  async delete(key: string): Promise<void> {
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }));
    } catch (e) {
      const c = classify(e);
      if (c.code === "NoSuchKey") return; // S3 answers 204 anyway; some compatible servers do not
      throw this.fail("delete", key, e);
    }
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    let token: string | undefined;
    let startAfter: string | undefined;
    for (;;) {
      let page;
      try {
        page = await this.client.send(
          new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, MaxKeys: this.pageSize, ContinuationToken: token, StartAfter: startAfter }),
        );
      } catch (e) {
        throw this.fail("list", prefix, e);
      }
      let last: string | undefined;
      for (const item of page.Contents ?? []) {
        if (item.Key === undefined) continue;
        last = item.Key;
        yield { key: item.Key, size: item.Size ?? 0, etag: bareEtag(item.ETag) };
      }
      if (page.IsTruncated !== true || last === undefined) return;
      // A truncated page without a token (seen on some compatible servers): carry on after its last key instead.
      token = page.NextContinuationToken;
      startAfter = token === undefined ? last : undefined;
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.client.destroy();
  }
}
