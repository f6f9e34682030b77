/**
 * An in-process S3 server (s3rver) for the suites: on 127.0.0.1, a free port, data in a directory that outlives a
 * stop so that `restart()` brings the same buckets back on the same port, as a real endpoint coming back would.
 *
 * Two fixes make s3rver 3.7.1 list like S3 here, and one teaches it S3's conditional create (see patchS3rver).
 * Known gap left: a ranged GET of an empty object answers 206 with Content-Length 1 and no body (real S3 says 416),
 * so a client waits until the connection drops.
 */
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { ObjectStoreConfig } from "../../src/devices/objstore/store/config.ts";

/** The part of s3rver's API used here (it ships no types). */
interface S3rverInstance {
  run(): Promise<{ port: number }>;
  close(): Promise<void>;
}
type S3rverConstructor = new (options: { port: number; address: string; silent: boolean; directory: string }) => S3rverInstance;

/** The part of a Koa context the conditional-create patch reads. */
interface S3rverContext {
  readonly app: unknown;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly params: { readonly bucket: string; readonly key: string };
  readonly store: { existsObject(bucket: string, key: string): Promise<boolean> };
}

/** Servers started with `conditionalPut: false`: they ignore If-None-Match on PUT, as s3rver itself does. */
const ignoringIfNoneMatch = new WeakSet<object>();

export interface S3Server {
  /** `http://127.0.0.1:<port>` */
  readonly endpoint: string;
  readonly port: number;
  readonly directory: string;
  /** Stops listening; the data stays. */
  stop(): Promise<void>;
  /** Starts again on the same port with the same data (after `stop()`). */
  restart(): Promise<void>;
  /** Stops, and removes the data directory when this harness made it. */
  cleanup(): Promise<void>;
}

/** s3rver's only access key; it checks that the key id exists but does not verify V4 signatures. */
export const S3RVER_KEY = "S3RVER";

let patched = false;

/**
 * s3rver walks its directories in readdir order, which is only sorted on some file systems (not ext4, not tmpfs), so
 * listings come out of order and paging by "start after the last key" loses keys: the walk is replaced by one in S3's
 * key order before s3rver loads it. And its ListObjectsV2 continuation tokens use the cipher name "des", which
 * Bun's crypto does not know (it knows "des-cbc", the same cipher), so every truncated listing failed with a 500.
 *
 * And s3rver ignores `If-None-Match: *` on PUT (it overwrites), where S3 itself (since 2024) answers 412 when the key
 * exists: the patch answers 412 PreconditionFailed then, checking and storing under a per-key lock, so that of racing
 * creates exactly one wins, as on S3. Without it no test could run the s3 backend's conditional create against a
 * server; a server started with `conditionalPut: false` keeps s3rver's own behaviour, for the test that the backend
 * detects a server which ignores the header.
 *
 * And s3rver's PUT is not atomic as S3's is (see patchAtomicPut).
 */
function patchS3rver(): void {
  if (patched) return;
  patched = true;
  const utils = require("s3rver/lib/utils.js") as { walk: (dir: string, recurse?: (dir: string) => boolean) => Generator<string> };
  const SUFFIX = /\._S3rver_[a-z_.]+$/;
  utils.walk = function* walk(dir: string, recurse?: (dir: string) => boolean): Generator<string> {
    const entries = fs.readdirSync(dir).map((name) => {
      const full = path.posix.join(dir, name);
      const isDir = fs.statSync(full).isDirectory();
      // A directory sorts as "name/" (where its keys sort); a file as its key's last part, without s3rver's suffix.
      return { full, isDir, order: Buffer.from(isDir ? `${name}/` : name.replace(SUFFIX, "")) };
    });
    entries.sort((a, b) => Buffer.compare(a.order, b.order));
    for (const entry of entries) {
      if (!entry.isDir) yield entry.full;
      else if (recurse === undefined || recurse(entry.full)) yield* walk(entry.full, recurse);
    }
  };
  const objects = require("s3rver/lib/controllers/object.js") as { putObject: (ctx: S3rverContext) => Promise<void> };
  const S3Error = require("s3rver/lib/models/error.js") as new (code: string, message: string, detail: object) => Error;
  const putObject = objects.putObject;
  const locks = new Map<string, Promise<void>>();
  objects.putObject = async function conditionalPutObject(ctx: S3rverContext): Promise<void> {
    if (ctx.headers["if-none-match"] !== "*" || ignoringIfNoneMatch.has(ctx.app as object)) return putObject(ctx);
    const name = `${ctx.params.bucket}/${ctx.params.key}`;
    for (let held = locks.get(name); held !== undefined; held = locks.get(name)) await held;
    let release = (): void => {};
    locks.set(name, new Promise<void>((resolve) => (release = resolve)));
    try {
      if (await ctx.store.existsObject(ctx.params.bucket, ctx.params.key)) {
        throw new S3Error("PreconditionFailed", "At least one of the pre-conditions you specified did not hold", { Condition: "If-None-Match" });
      }
      await putObject(ctx);
    } finally {
      locks.delete(name);
      release();
    }
  };
  patchAtomicPut();
  type CipherFactory = (name: string, ...rest: unknown[]) => unknown;
  const crypto = require("crypto") as { createCipheriv: CipherFactory; createDecipheriv: CipherFactory };
  for (const name of ["createCipheriv", "createDecipheriv"] as const) {
    const original = crypto[name];
    crypto[name] = (cipher: string, ...rest: unknown[]) => original(cipher === "des" ? "des-cbc" : cipher, ...rest);
  }
}

/** The part of an s3rver object that its file store's putObject reads. */
interface S3rverObject {
  readonly bucket: string;
  readonly key: string;
  readonly content: Buffer | AsyncIterable<Buffer>;
  readonly metadata: Record<string, string | undefined>;
}
interface S3rverFileStore {
  getResourcePath(bucket: string, key: string, resource: string): string;
  putMetadata(bucket: string, key: string, metadata: Record<string, string | undefined>, md5: string): Promise<void>;
}

let putTemporaries = 0;

/**
 * s3rver writes a PUT's body straight into the object's file and answers once the body has been read, not written:
 * a reader could see part of an object, a PUT cut off by a client's death (the objstore crash test SIGKILLs its
 * writer mid-upload) left part of one in place, and a GET of a file being truncated by a new PUT of the same key
 * ended short ("aborted"). On S3 a PUT is all or nothing. Here the body is read whole (a body shorter than its
 * Content-Length is refused), written to a temporary name the listing skips, and renamed into place.
 */
function patchAtomicPut(): void {
  const FilesystemStore = require("s3rver/lib/stores/filesystem.js") as { prototype: S3rverFileStore & { putObject(object: S3rverObject): Promise<{ size: number; md5: string }> } };
  FilesystemStore.prototype.putObject = async function atomicPutObject(this: S3rverFileStore, object: S3rverObject): Promise<{ size: number; md5: string }> {
    let body: Buffer;
    if (Buffer.isBuffer(object.content)) body = object.content;
    else {
      const chunks: Buffer[] = [];
      for await (const chunk of object.content) chunks.push(chunk);
      body = Buffer.concat(chunks);
    }
    // Only a request's own header counts (a multipart completion carries the initiating request's metadata).
    const fromRequest = typeof (object.content as { headers?: unknown }).headers === "object";
    const declared = object.metadata["content-length"];
    if (fromRequest && declared !== undefined && Number(declared) !== body.length) throw new Error(`PUT of ${object.key}: body of ${body.length} bytes, Content-Length ${declared}`);
    const md5 = createHash("md5").update(body).digest("hex");
    const objectPath = this.getResourcePath(object.bucket, object.key, "object");
    await fs.promises.mkdir(path.dirname(objectPath), { recursive: true });
    const temporary = `${objectPath}.partial-${process.pid}-${++putTemporaries}`;
    await fs.promises.writeFile(temporary, body);
    await fs.promises.writeFile(`${temporary}.md5`, md5);
    await fs.promises.rename(`${temporary}.md5`, `${objectPath}.md5`);
    await fs.promises.rename(temporary, objectPath);
    await this.putMetadata(object.bucket, object.key, object.metadata, md5);
    return { size: body.length, md5 };
  };
}

export async function startS3Server(options: { directory?: string; port?: number; conditionalPut?: boolean } = {}): Promise<S3Server> {
  patchS3rver();
  const S3rver = require("s3rver") as S3rverConstructor;
  const owned = options.directory === undefined;
  const directory = options.directory ?? fs.mkdtempSync(path.join(os.tmpdir(), "usbd-s3rver-"));
  fs.mkdirSync(directory, { recursive: true });
  const start = async (port: number): Promise<{ instance: S3rverInstance; port: number }> => {
    const instance = new S3rver({ port, address: "127.0.0.1", silent: true, directory });
    if (options.conditionalPut === false) ignoringIfNoneMatch.add(instance);
    const info = await instance.run();
    return { instance, port: info.port };
  };
  let running: S3rverInstance | undefined;
  const first = await start(options.port ?? 0);
  running = first.instance;
  const port = first.port;
  const stop = async (): Promise<void> => {
    const instance = running;
    running = undefined;
    await instance?.close();
  };
  return {
    endpoint: `http://127.0.0.1:${port}`,
    port,
    directory,
    stop,
    async restart() {
      await stop();
      running = (await start(port)).instance;
    },
    async cleanup() {
      await stop();
      if (owned) fs.rmSync(directory, { recursive: true, force: true });
    },
  };
}

/** The store configuration for `server` (what `--objstore-cfg` would parse to). */
export function s3ServerConfig(server: Pick<S3Server, "endpoint">, bucket = "usbd"): ObjectStoreConfig {
  return { accessKeyId: S3RVER_KEY, secretKey: S3RVER_KEY, endpoint: server.endpoint, region: "us-east-1", bucket };
}

/** The same as an inline `--objstore-cfg` value. */
export function s3ServerConfigJson(server: Pick<S3Server, "endpoint">, bucket = "usbd"): string {
  return JSON.stringify({ access_key_id: S3RVER_KEY, secret_key: S3RVER_KEY, endpoint: server.endpoint, region: "us-east-1", bucket });
}
