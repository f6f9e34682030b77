/**
 * The ObjectStore over OpenStack Swift's own API, with fetch (the API is plain HTTP and no well-kept JS client
 * exists): auth v1 (tempauth, swauth, most Swift-only deployments) or Keystone v3 (password, project scope), a token
 * renewed when the server says it expired, one container. Conditional create is PUT with `If-None-Match: *` (412),
 * which Swift checks when the upload starts: not atomic against overlapping creates (see `createCaveat`).
 */
import { createHash } from "node:crypto";
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

export type SwiftAuth =
  | { readonly version: 1; readonly url: string; readonly user: string; readonly key: string }
  | {
      readonly version: 3;
      readonly url: string;
      readonly user: string;
      readonly password: string;
      readonly project: string;
      /** The domain of both the user and the project ("Default" unless the cloud says otherwise). */
      readonly domain: string;
      /** Which region's object-store endpoint to use from the catalog; absent: the first public one. */
      readonly region?: string;
    };

export interface SwiftObjectStoreOptions {
  readonly auth: SwiftAuth;
  readonly container: string;
  /** Use this storage URL instead of the one the auth service names (a proxy, another region). */
  readonly storageUrl?: string;
  /** Objects asked for per listing; 10000 (Swift's default maximum) unless a test wants to see paging. */
  readonly listPageSize?: number;
  /** How long a request may take before it fails as unavailable, plus 1 s per MiB of body (ms). */
  readonly timeoutMs?: number;
}

interface Session {
  readonly token: string;
  readonly storageUrl: string;
}

/** A refusal or failure with an HTTP answer, turned into an ObjectStoreError by `fail`. */
class SwiftHttpError extends Error {
  constructor(
    readonly status: number,
    readonly detail: string,
  ) {
    super(`HTTP ${status}${detail === "" ? "" : `: ${detail}`}`);
  }
}

/** A GET's body that did not arrive whole: the read failed, or ended before Content-Length. Fetched once more. */
class CutBody extends Error {}

function kindOfStatus(status: number): ObjectStoreErrorKind {
  if (status === 401 || status === 403) return "unauthorised";
  if (status >= 500 || status === 429 || status === 408 || status === 498) return "unavailable";
  return "other";
}

/** The URL path of `key`: each `/`-separated part encoded on its own. */
function encodeKey(key: string): string {
  return key.split("/").map(encodeURIComponent).join("/");
}

async function detailOf(response: Response): Promise<string> {
  const text = await response.text().catch(() => "");
  // Swift answers errors with a short HTML or text page: its words, not its tags.
  return text.replace(/<[^>]*>/g, " ").replace(/\s+/g, " ").trim().slice(0, 200);
}

/** All of `response`'s body, or a CutBody when the read fails or ends short of Content-Length. */
async function wholeBody(response: Response): Promise<Uint8Array> {
  let body: Uint8Array;
  try {
    body = new Uint8Array(await response.arrayBuffer());
  } catch (e) {
    throw new CutBody(`the answer's body was cut off (${e instanceof Error ? e.message : String(e)})`);
  }
  // Content-Length counts the encoded bytes; fetch hands back decoded ones (Swift itself never encodes a body).
  const expected = response.headers.get("content-length");
  const encoded = (response.headers.get("content-encoding") ?? "identity") !== "identity";
  if (expected !== null && !encoded && body.byteLength !== Number(expected)) {
    throw new CutBody(`the answer's body ended after ${body.byteLength} of its ${expected} bytes (Content-Length)`);
  }
  return body;
}

export class SwiftObjectStore implements ObjectStore {
  readonly description: string;
  readonly putDigest = "md5";
  readonly createCaveat =
    "Swift checks If-None-Match: * when an upload starts, not when it lands: a create that starts after another has " +
    "finished fails as it should, but creates that overlap in time can all succeed (the last one's bytes stay)";
  private readonly options: SwiftObjectStoreOptions;
  private readonly pageSize: number;
  private readonly secrets: readonly string[];
  private session: Promise<Session> | undefined;
  /** Whether the container is known to exist: then a 404 is a missing object, not a missing container. */
  private containerSeen = false;

  constructor(options: SwiftObjectStoreOptions) {
    this.options = options;
    this.pageSize = options.listPageSize ?? 10_000;
    this.secrets = [options.auth.version === 1 ? options.auth.key : options.auth.password];
    const where = options.storageUrl ?? options.auth.url;
    this.description = `swift container "${options.container}" at ${where} (auth v${options.auth.version}, user ${options.auth.user})`;
  }

  private timeout(bodyBytes: number): AbortSignal {
    return AbortSignal.timeout((this.options.timeoutMs ?? 30_000) + Math.ceil(bodyBytes / (1 << 20)) * 1000);
  }

  /** A token and storage URL: from auth v1's headers, or from Keystone v3's token and catalog. */
  private async authenticate(): Promise<Session> {
    const auth = this.options.auth;
    if (auth.version === 1) {
      const response = await fetch(auth.url, { headers: { "X-Auth-User": auth.user, "X-Auth-Key": auth.key }, signal: this.timeout(0) });
      if (!response.ok) throw new SwiftHttpError(response.status, `auth v1 at ${auth.url} refused user ${auth.user}: ${await detailOf(response)}`);
      await response.body?.cancel();
      const token = response.headers.get("x-auth-token") ?? response.headers.get("x-storage-token");
      const storageUrl = this.options.storageUrl ?? response.headers.get("x-storage-url");
      if (token === null || storageUrl === null) throw new SwiftHttpError(502, `auth v1 at ${auth.url} answered without X-Auth-Token or X-Storage-Url`);
      return { token, storageUrl };
    }
    const base = auth.url.replace(/\/+$/, "");
    const url = base.endsWith("/auth/tokens") ? base : base.endsWith("/v3") ? `${base}/auth/tokens` : `${base}/v3/auth/tokens`;
    const body = {
      auth: {
        identity: { methods: ["password"], password: { user: { name: auth.user, domain: { name: auth.domain }, password: auth.password } } },
        scope: { project: { name: auth.project, domain: { name: auth.domain } } },
      },
    };
    const response = await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body), signal: this.timeout(0) });
    if (!response.ok) throw new SwiftHttpError(response.status, `Keystone at ${url} refused user ${auth.user} (project ${auth.project}): ${await detailOf(response)}`);
    const token = response.headers.get("x-subject-token");
    const answer = (await response.json().catch(() => undefined)) as
      | { token?: { catalog?: { type?: string; endpoints?: { interface?: string; region?: string; region_id?: string; url?: string }[] }[] } }
      | undefined;
    if (token === null) throw new SwiftHttpError(502, `Keystone at ${url} answered without X-Subject-Token`);
    if (this.options.storageUrl !== undefined) return { token, storageUrl: this.options.storageUrl };
    const endpoints = (answer?.token?.catalog ?? []).filter((s) => s.type === "object-store").flatMap((s) => s.endpoints ?? []);
    const fits = endpoints.filter((e) => e.interface === "public" && (auth.region === undefined || e.region === auth.region || e.region_id === auth.region));
    const storageUrl = fits[0]?.url;
    if (storageUrl === undefined) {
      const regions = [...new Set(endpoints.map((e) => e.region ?? e.region_id ?? "?"))].join(", ") || "none";
      throw new SwiftHttpError(404, `Keystone's catalog has no public object-store endpoint${auth.region === undefined ? "" : ` in region ${auth.region}`} (regions: ${regions}); set "region" or "storage_url"`);
    }
    return { token, storageUrl };
  }

  private async currentSession(): Promise<Session> {
    this.session ??= this.authenticate();
    try {
      return await this.session;
    } catch (e) {
      this.session = undefined;
      throw e;
    }
  }

  /** One request on the container (`path` "" for the container itself); a 401 renews the token once. */
  private async request(method: string, path: string, init: { headers?: Record<string, string>; body?: Uint8Array; query?: string } = {}): Promise<Response> {
    for (let attempt = 1; ; attempt++) {
      const session = await this.currentSession();
      const url = `${session.storageUrl.replace(/\/+$/, "")}/${encodeURIComponent(this.options.container)}${path === "" ? "" : `/${encodeKey(path)}`}${init.query ?? ""}`;
      const response = await fetch(url, {
        method,
        headers: { "X-Auth-Token": session.token, ...init.headers },
        body: init.body,
        signal: this.timeout(init.body?.byteLength ?? 0),
      });
      if (response.status === 401 && attempt === 1) {
        await response.body?.cancel();
        this.session = undefined; // expired or revoked: authenticate again, once
        continue;
      }
      return response;
    }
  }

  private async failure(operation: ObjectStoreOperation, key: string, response: Response): Promise<ObjectStoreError> {
    const detail = await detailOf(response);
    return this.fail(operation, key, new SwiftHttpError(response.status, detail));
  }

  private fail(operation: ObjectStoreOperation, key: string, err: unknown): ObjectStoreError {
    if (err instanceof ObjectStoreError) return err;
    let kind: ObjectStoreErrorKind;
    let cause: string;
    if (err instanceof SwiftHttpError) {
      kind = kindOfStatus(err.status);
      cause = err.message;
    } else {
      // fetch failed without an answer: refused, reset, DNS, or our own timeout.
      const e = err as { name?: unknown; code?: unknown; message?: unknown };
      kind = "unavailable";
      cause = `${typeof e.code === "string" ? `${e.code}: ` : ""}${typeof e.message === "string" ? e.message : String(err)}`;
      if (e.name === "TimeoutError") cause = `timed out (${cause})`;
    }
    let hint = "";
    if (kind === "unauthorised") hint = "; check auth_url, user and key (or password, project, domain) in --objstore-cfg";
    else if (kind === "not-found") hint = "; prepare() creates it (the volume's create does)";
    else if (kind === "unavailable" && !(err instanceof SwiftHttpError)) hint = "; is the server reachable?";
    const subject = key === "" ? operation : `${operation} "${key}"`;
    const message = redact(`object store: ${subject} failed on ${this.description}: ${cause}${hint}`, this.secrets);
    return new ObjectStoreError(operation, key, kind, message);
  }

  /** A 404 on an object: a missing object, or (when the container was never seen) a missing container. */
  private async missing(operation: ObjectStoreOperation, key: string): Promise<ObjectStoreError | undefined> {
    if (this.containerSeen) return undefined;
    const response = await this.request("HEAD", "");
    await response.body?.cancel();
    if (response.ok) {
      this.containerSeen = true;
      return undefined;
    }
    if (response.status === 404) {
      return new ObjectStoreError(operation, key, "not-found", `object store: ${operation} "${key}" failed on ${this.description}: the container does not exist; prepare() creates it (the volume's create does)`);
    }
    return this.failure(operation, key, response);
  }

  async prepare(): Promise<void> {
    try {
      const response = await this.request("PUT", "");
      if (!response.ok) throw await this.failure("prepare", "", response);
      await response.body?.cancel();
      this.containerSeen = true;
    } catch (e) {
      throw this.fail("prepare", "", e);
    }
  }

  private async upload(operation: "put" | "create", key: string, body: Uint8Array, extra: Record<string, string>, digest?: Uint8Array): Promise<Response> {
    // Swift checks the body against ETag (422 when they differ): a body damaged on the way is refused.
    const md5 = digest === undefined ? createHash("md5").update(body).digest("hex") : Buffer.from(digest).toString("hex");
    const response = await this.request("PUT", key, { body, headers: { ETag: md5, "Content-Type": "application/octet-stream", ...extra } });
    if (response.status === 404) {
      await response.body?.cancel();
      throw (await this.missing(operation, key)) ?? new ObjectStoreError(operation, key, "not-found", `object store: ${operation} "${key}" failed on ${this.description}: HTTP 404`);
    }
    return response;
  }

  async put(key: string, body: Uint8Array, digest?: Uint8Array): Promise<{ readonly etag: string }> {
    try {
      const response = await this.upload("put", key, body, {}, digest);
      if (!response.ok) throw await this.failure("put", key, response);
      await response.body?.cancel();
      return { etag: bareEtag(response.headers.get("etag")) };
    } catch (e) {
      throw this.fail("put", key, e);
    }
  }

  async createIfAbsent(key: string, body: Uint8Array): Promise<CreateResult> {
    try {
      const response = await this.upload("create", key, body, { "If-None-Match": "*" });
      if (response.status === 412) {
        await response.body?.cancel();
        return { outcome: "exists" };
      }
      if (!response.ok) throw await this.failure("create", key, response);
      await response.body?.cancel();
      return { outcome: "created", etag: bareEtag(response.headers.get("etag")) };
    } catch (e) {
      throw this.fail("create", key, e);
    }
  }

  async get(key: string, range?: ByteRange): Promise<GetResult | undefined> {
    checkRange("get", key, range);
    if (range !== undefined && range.length === 0) return emptyRange(this, key);
    // A body cut off once the answer had begun (a kept-alive connection the server closed mid-response) is fetched
    // once more; the second time it is a retryable error, never a short body handed back as the object.
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.getOnce(key, range);
      } catch (e) {
        if (attempt === 1 && e instanceof CutBody) continue;
        throw this.fail("get", key, e);
      }
    }
  }

  private async getOnce(key: string, range: ByteRange | undefined): Promise<GetResult | undefined> {
    const headers: Record<string, string> = range === undefined ? {} : { Range: `bytes=${range.offset}-${range.offset + range.length - 1}` };
    const response = await this.request("GET", key, { headers });
    if (response.status === 404) {
      await response.body?.cancel();
      const error = await this.missing("get", key);
      if (error !== undefined) throw error;
      return undefined;
    }
    if (response.status === 416 && range !== undefined) {
      await response.body?.cancel();
      return emptyRange(this, key);
    }
    if (!response.ok) throw await this.failure("get", key, response);
    const body = await wholeBody(response);
    const etag = bareEtag(response.headers.get("etag"));
    const total = /\/(\d+)$/.exec(response.headers.get("content-range") ?? "");
    if (total !== null) return { body, etag, size: Number(total[1]) };
    // A 200 to a ranged GET: the whole object came back, so cut the range out here.
    const size = body.byteLength;
    if (range === undefined) return { body, etag, size };
    return { body: body.subarray(Math.min(range.offset, size), Math.min(range.offset + range.length, size)), etag, size };
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    try {
      const response = await this.request("HEAD", key);
      await response.body?.cancel();
      if (response.status === 404) {
        const error = await this.missing("head", key);
        if (error !== undefined) throw error;
        return undefined;
      }
      if (!response.ok) throw this.fail("head", key, new SwiftHttpError(response.status, ""));
      return { key, size: Number(response.headers.get("content-length") ?? 0), etag: bareEtag(response.headers.get("etag")) };
    } catch (e) {
      throw this.fail("head", key, e);
    }
  }

  async delete(key: string): Promise<void> {
    try {
      const response = await this.request("DELETE", key);
      if (response.status === 404) {
        await response.body?.cancel();
        const error = await this.missing("delete", key);
        if (error !== undefined) throw error;
        return;
      }
      if (!response.ok) throw await this.failure("delete", key, response);
      await response.body?.cancel();
    } catch (e) {
      throw this.fail("delete", key, e);
    }
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    let marker = "";
    for (;;) {
      let page: { name: string; bytes: number; hash: string }[];
      try {
        const query = `?format=json&limit=${this.pageSize}&prefix=${encodeURIComponent(prefix)}${marker === "" ? "" : `&marker=${encodeURIComponent(marker)}`}`;
        const response = await this.request("GET", "", { query });
        if (response.status === 404) {
          await response.body?.cancel();
          throw new ObjectStoreError("list", prefix, "not-found", `object store: list "${prefix}" failed on ${this.description}: the container does not exist`);
        }
        if (!response.ok) throw await this.failure("list", prefix, response);
        page = response.status === 204 ? [] : ((await response.json()) as typeof page);
      } catch (e) {
        throw this.fail("list", prefix, e);
      }
      for (const item of page) yield { key: item.name, size: item.bytes, etag: item.hash };
      if (page.length < this.pageSize) return;
      marker = page[page.length - 1]!.name;
    }
  }

  close(): void {}
}
