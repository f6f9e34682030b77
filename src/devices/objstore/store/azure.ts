/**
 * The ObjectStore over Azure Blob Storage (block blobs in one container) with @azure/storage-blob: an account key
 * (shared-key signing) or a SAS token. Works against Azure itself, sovereign clouds (their own endpoint) and azurite.
 * Conditional create is Put Blob with `If-None-Match: *` (409 BlobAlreadyExists when the blob is there).
 */
import {
  AnonymousCredential,
  BlobServiceClient,
  RestError,
  StorageSharedKeyCredential,
  type BlobDownloadResponseParsed,
  type ContainerClient,
  type StoragePipelineOptions,
} from "@azure/storage-blob";
import { redact } from "./redact.ts";
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

export interface AzureObjectStoreOptions {
  /** The storage account; with `key` it signs requests, and it names the default endpoint. */
  readonly account?: string;
  /** The account key (base64), for shared-key signing. Exactly one of `key` and `sas`. */
  readonly key?: string;
  /** A SAS token (the query string, with or without the leading `?`). */
  readonly sas?: string;
  readonly container: string;
  /** The blob service URL; absent: `https://<account>.blob.core.windows.net`. azurite: `http://127.0.0.1:PORT/devstoreaccount1`. */
  readonly endpoint?: string;
  /** Blobs asked for per list page; 5000 (Azure's maximum) unless a test wants to see paging. */
  readonly listPageSize?: number;
  /** How long one try of a request may take (ms) before it fails as unavailable. */
  readonly tryTimeoutMs?: number;
}

/** Error codes that mean "slow down" or "try again" whatever the status says. */
const RETRY_CODES = new Set(["ServerBusy", "OperationTimedOut", "InternalError", "ServiceUnavailable"]);
/** Codes of a refused identity or signature: the fix is in the configuration. */
const AUTH_CODES = new Set([
  "AuthenticationFailed", "AuthorizationFailure", "AuthorizationPermissionMismatch", "AuthorizationSourceIPMismatch",
  "AuthorizationProtocolMismatch", "AuthorizationResourceTypeMismatch", "AuthorizationServiceMismatch", "InvalidAuthenticationInfo",
  "NoAuthenticationInformation", "InsufficientAccountPermissions", "AccountIsDisabled",
]);
const NETWORK_CODES = /ECONNREFUSED|ECONNRESET|ETIMEDOUT|EPIPE|ENOTFOUND|EAI_AGAIN|EHOSTUNREACH|ENETUNREACH|REQUEST_SEND_ERROR|socket hang up|aborted|timed? ?out|Unable to connect|ConnectionRefused/i;

interface Classified {
  readonly kind: ObjectStoreErrorKind;
  readonly status?: number;
  readonly code?: string;
  readonly cause: string;
}

/** A download's body that did not arrive whole: the stream failed, or ended short of Content-Length. */
class CutBody extends Error {}

function classify(err: unknown): Classified {
  if (err instanceof CutBody) return { kind: "unavailable", cause: err.message };
  const e = err as { statusCode?: unknown; code?: unknown; details?: { errorCode?: unknown }; message?: unknown; name?: unknown } | null;
  const status = typeof e?.statusCode === "number" ? e.statusCode : undefined;
  const detailCode = typeof e?.details?.errorCode === "string" ? e.details.errorCode : undefined;
  const code = detailCode ?? (typeof e?.code === "string" ? e.code : undefined);
  const message = typeof e?.message === "string" && e.message !== "" ? e.message : String(err);
  // Azure's messages carry "RequestId:... Time:..." lines after the first: the first line is what a person needs.
  const first = message.split("\n")[0]!.trim();
  if (status === undefined) {
    const network = (code !== undefined && NETWORK_CODES.test(code)) || NETWORK_CODES.test(message) || e?.name === "AbortError";
    return { kind: network ? "unavailable" : "other", code, cause: first };
  }
  const cause = `${code ?? "error"} (HTTP ${status})${first !== "" && first !== code ? `: ${first}` : ""}`;
  let kind: ObjectStoreErrorKind = "other";
  if (status === 401 || status === 403 || (code !== undefined && AUTH_CODES.has(code))) kind = "unauthorised";
  else if (code === "ContainerNotFound" || code === "ContainerBeingDeleted") kind = "not-found";
  else if (status >= 500 || status === 429 || status === 408 || (code !== undefined && RETRY_CODES.has(code))) kind = "unavailable";
  return { kind, status, code, cause };
}

/** All `expected` bytes of a download's body, or a CutBody when the stream fails or ends with fewer or more. */
async function readAll(stream: NodeJS.ReadableStream | undefined, expected: number): Promise<Uint8Array> {
  const out = new Uint8Array(expected);
  let filled = 0;
  try {
    for await (const chunk of stream === undefined ? [] : (stream as AsyncIterable<Uint8Array | string>)) {
      const piece = typeof chunk === "string" ? new TextEncoder().encode(chunk) : chunk;
      if (filled + piece.byteLength > expected) throw new CutBody(`the answer's body ran past its ${expected} bytes (Content-Length)`);
      out.set(piece, filled);
      filled += piece.byteLength;
    }
  } catch (e) {
    if (e instanceof CutBody) throw e;
    // The SDK's own stream says "Data corruption failure: received less data than required ..." for a cut body:
    // the numbers here say that better; any other failure is quoted.
    const why = String(e instanceof Error ? e.message : e).split("\n")[0]!;
    throw new CutBody(`the answer's body was cut off after ${filled} of its ${expected} bytes${/^Data corruption failure/.test(why) ? "" : ` (${why})`}`);
  }
  if (filled !== expected) throw new CutBody(`the answer's body ended after ${filled} of its ${expected} bytes (Content-Length)`);
  return out;
}

export class AzureObjectStore implements ObjectStore {
  readonly description: string;
  private readonly container: ContainerClient;
  private readonly containerName: string;
  private readonly pageSize: number;
  private readonly secrets: readonly (string | undefined)[];

  constructor(options: AzureObjectStoreOptions) {
    if ((options.key === undefined) === (options.sas === undefined)) throw new Error("AzureObjectStore needs exactly one of key and sas");
    const endpoint = (options.endpoint ?? `https://${options.account ?? ""}.blob.core.windows.net`).replace(/\/+$/, "");
    this.containerName = options.container;
    this.pageSize = options.listPageSize ?? 5000;
    this.secrets = [options.key, options.sas];
    this.description = `azure container "${options.container}" at ${endpoint}`;
    const pipeline: StoragePipelineOptions = {
      // The device retries with its own backoff forever; one SDK retry covers a dropped keep-alive connection.
      retryOptions: { maxTries: 2, retryDelayInMs: 200, maxRetryDelayInMs: 1000, tryTimeoutInMs: options.tryTimeoutMs ?? 120_000 },
    };
    let service: BlobServiceClient;
    if (options.key !== undefined) {
      service = new BlobServiceClient(endpoint, new StorageSharedKeyCredential(options.account ?? "", options.key), pipeline);
    } else {
      const sas = options.sas!.replace(/^\?/, "");
      service = new BlobServiceClient(`${endpoint}?${sas}`, new AnonymousCredential(), pipeline);
    }
    this.container = service.getContainerClient(options.container);
  }

  private fail(operation: ObjectStoreOperation, key: string, err: unknown): ObjectStoreError {
    if (err instanceof ObjectStoreError) return err;
    const c = classify(err);
    let hint = "";
    if (c.kind === "unauthorised") hint = `; check account and key (or sas) in --objstore-cfg, and that they may use container "${this.containerName}"`;
    else if (c.kind === "not-found") hint = "; prepare() creates it (the volume's create does)";
    else if (c.kind === "unavailable" && c.status === undefined) hint = "; is the endpoint reachable?";
    const subject = key === "" ? operation : `${operation} "${key}"`;
    const message = redact(`object store: ${subject} failed on ${this.description}: ${c.cause}${hint}`, this.secrets);
    return new ObjectStoreError(operation, key, c.kind, message, { cause: err instanceof RestError ? new Error(message) : err });
  }

  async prepare(): Promise<void> {
    try {
      // A SAS for one container may list it but neither read its properties nor create containers: a one-blob
      // listing shows it is there with what every SAS this store can use must allow anyway.
      try {
        await this.container.listBlobsFlat().byPage({ maxPageSize: 1 }).next();
        return;
      } catch (e) {
        if (classify(e).code !== "ContainerNotFound") throw e;
      }
      await this.container.createIfNotExists();
    } catch (e) {
      throw this.fail("prepare", "", e);
    }
  }

  async put(key: string, body: Uint8Array): Promise<{ readonly etag: string }> {
    try {
      const out = await this.container.getBlockBlobClient(key).upload(body, body.byteLength);
      return { etag: bareEtag(out.etag) };
    } catch (e) {
      throw this.fail("put", key, e);
    }
  }

  async createIfAbsent(key: string, body: Uint8Array): Promise<CreateResult> {
    try {
      const out = await this.container.getBlockBlobClient(key).upload(body, body.byteLength, { conditions: { ifNoneMatch: "*" } });
      return { outcome: "created", etag: bareEtag(out.etag) };
    } catch (e) {
      const c = classify(e);
      if (c.code === "BlobAlreadyExists" || c.status === 412 || (c.status === 409 && c.code !== "ContainerBeingDeleted")) return { outcome: "exists" };
      throw this.fail("create", key, e);
    }
  }

  async get(key: string, range?: ByteRange): Promise<GetResult | undefined> {
    checkRange("get", key, range);
    if (range !== undefined && range.length === 0) return emptyRange(this, key);
    // The SDK would resume a cut body up to 5 times, then fail in words no classifier knows; here the stream is not
    // resumed (maxRetryRequests 0) and a cut body is fetched once more, then a retryable error, as on s3 and swift.
    for (let attempt = 1; ; attempt++) {
      let out: BlobDownloadResponseParsed;
      try {
        const blob = this.container.getBlobClient(key);
        out = await blob.download(range?.offset ?? 0, range?.length, { maxRetryRequests: 0 });
      } catch (e) {
        const c = classify(e);
        if (c.code === "BlobNotFound" || (c.status === 404 && c.code !== "ContainerNotFound")) return undefined;
        // A range that starts at or past the end: the interface's answer is an empty body.
        if (c.status === 416 && range !== undefined) return emptyRange(this, key);
        throw this.fail("get", key, e);
      }
      let body: Uint8Array;
      try {
        body = await readAll(out.readableStreamBody, out.contentLength ?? 0);
      } catch (e) {
        if (attempt === 1) continue;
        throw this.fail("get", key, e);
      }
      const total = /\/(\d+)$/.exec(out.contentRange ?? "");
      const size = total !== null ? Number(total[1]) : (out.contentLength ?? body.byteLength);
      return { body, etag: bareEtag(out.etag), size };
    }
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    try {
      const out = await this.container.getBlobClient(key).getProperties();
      return { key, size: out.contentLength ?? 0, etag: bareEtag(out.etag) };
    } catch (e) {
      const c = classify(e);
      if (c.code === "BlobNotFound" || (c.status === 404 && c.code !== "ContainerNotFound")) return undefined;
      throw this.fail("head", key, e);
    }
  }

  async delete(key: string): Promise<void> {
    try {
      await this.container.getBlobClient(key).deleteIfExists();
    } catch (e) {
      throw this.fail("delete", key, e);
    }
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    const pages = this.container.listBlobsFlat({ prefix: prefix === "" ? undefined : prefix }).byPage({ maxPageSize: this.pageSize });
    for (;;) {
      let page;
      try {
        page = await pages.next();
      } catch (e) {
        throw this.fail("list", prefix, e);
      }
      if (page.done === true) return;
      for (const item of page.value.segment.blobItems) {
        yield { key: item.name, size: item.properties.contentLength ?? 0, etag: bareEtag(item.properties.etag) };
      }
    }
  }

  close(): void {}
}
