/**
 * The ObjectStore over SFTP (ssh2): key `a/b/c` is file `<path>/a/b/c` on the server. The server's host key must
 * match the configured SHA256 fingerprint (an unknown host is refused, as ssh does with StrictHostKeyChecking).
 * A put writes a temporary file, fsyncs it (fsync@openssh.com) and renames it over the key with
 * posix-rename@openssh.com, so a reader never sees a torn object; a create renames with plain SFTP rename, which
 * OpenSSH does with link(2): it never replaces an existing name, so of racing creates exactly one wins. A get
 * reads exactly the size the open file had (sftp-requests.ts), and reads once more when that fails.
 */
import { createHash, randomUUID } from "node:crypto";
import { Client, type ConnectConfig, type FileEntryWithStats, type SFTPWrapper, type Stats } from "ssh2";
import { redact } from "./redact.ts";
import { TEMP_PREFIX, keyParts } from "./common.ts";
import { ConnectError, ShortRead, call, connectionLost, readExactly, trackRequests, writeAll } from "./sftp-requests.ts";
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

export interface SftpObjectStoreOptions {
  readonly host: string;
  readonly port: number;
  readonly user: string;
  /** The remote directory the objects go in (created when missing). */
  readonly path: string;
  /** The server's host key, `SHA256:<base64>` as `ssh-keygen -l` prints it. */
  readonly hostFingerprint: string;
  readonly privateKey?: Buffer;
  /** Where the private key came from, for messages. */
  readonly privateKeyFile?: string;
  readonly passphrase?: string;
  readonly password?: string;
  /** How long connecting and authenticating may take (ms). */
  readonly connectTimeoutMs?: number;
}

/** SFTP status codes (draft-ietf-secsh-filexfer-02). */
const NO_SUCH_FILE = 2;
const PERMISSION_DENIED = 3;
const NO_CONNECTION = 6;
const CONNECTION_LOST = 7;
const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;

/** OpenSSH's fingerprint of a host key: SHA256 of the key blob, base64 without padding. */
export function sshFingerprint(key: Buffer): string {
  return `SHA256:${createHash("sha256").update(key).digest("base64").replace(/=+$/, "")}`;
}

function statusOf(err: unknown): number | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === "number" ? code : undefined;
}

function etagOf(attrs: { size: number; mtime: number }): string {
  return `${attrs.size.toString(16)}-${attrs.mtime.toString(16)}`;
}

interface Connection {
  readonly client: Client;
  readonly sftp: SFTPWrapper;
}

export class SftpObjectStore implements ObjectStore {
  readonly description: string;
  private readonly options: SftpObjectStoreOptions;
  private readonly root: string;
  private readonly secrets: readonly (string | undefined)[];
  private connection: Promise<Connection> | undefined;
  private closed = false;

  constructor(options: SftpObjectStoreOptions) {
    this.options = options;
    this.root = options.path.replace(/\/+$/, "") || "/";
    this.secrets = [options.password, options.passphrase, options.privateKey?.toString("utf8")];
    this.description = `sftp ${options.user}@${options.host}:${options.port} ${this.root}`;
  }

  private connect(): Promise<Connection> {
    const o = this.options;
    return new Promise<Connection>((resolve, reject) => {
      const client = new Client();
      let seen: string | undefined;
      let settled = false;
      let channel: SFTPWrapper | undefined;
      const fail = (error: Error): void => {
        if (settled) return;
        settled = true;
        client.end();
        reject(error);
      };
      const config: ConnectConfig = {
        host: o.host,
        port: o.port,
        username: o.user,
        privateKey: o.privateKey,
        passphrase: o.passphrase,
        password: o.password,
        readyTimeout: o.connectTimeoutMs ?? 10_000,
        keepaliveInterval: 15_000,
        keepaliveCountMax: 3,
        hostVerifier: (key: Buffer) => {
          seen = sshFingerprint(key);
          return seen === o.hostFingerprint;
        },
      };
      client.on("ready", () => {
        client.sftp((err, sftp) => {
          if (err) return fail(new ConnectError("other", `the server refused the sftp subsystem: ${err.message}`));
          settled = true;
          channel = sftp;
          trackRequests(sftp);
          resolve({ client, sftp });
        });
      });
      client.on("error", (err: Error & { level?: string }) => {
        if (seen !== undefined && seen !== o.hostFingerprint) {
          return fail(new ConnectError("unauthorised", `the host key of ${o.host}:${o.port} is ${seen}, not the configured host_fingerprint ${o.hostFingerprint}: if you trust that the server's key changed, put the new fingerprint in --objstore-cfg`));
        }
        if (err.level === "client-authentication") {
          const how = o.privateKey !== undefined ? `the key in ${o.privateKeyFile ?? "private_key_file"}` : "the password";
          return fail(new ConnectError("unauthorised", `user ${o.user} was refused with ${how} (${err.message})`));
        }
        if (/passphrase|encrypted|parse|Unsupported key/i.test(err.message) && err.level === undefined) {
          return fail(new ConnectError("other", `cannot use private_key_file ${o.privateKeyFile ?? ""}: ${err.message}`));
        }
        fail(new ConnectError("unavailable", err.message));
      });
      client.on("close", () => {
        if (channel !== undefined) connectionLost(channel);
        if (!settled) fail(new ConnectError("unavailable", "the connection closed during the handshake"));
        // A dropped connection is made again by the next call.
        if (this.connection !== undefined) void this.connection.then((c) => c.client === client && (this.connection = undefined), () => {});
      });
      try {
        client.connect(config);
      } catch (e) {
        fail(new ConnectError("other", e instanceof Error ? e.message : String(e)));
      }
    });
  }

  private async sftp(): Promise<SFTPWrapper> {
    if (this.closed) throw new ConnectError("other", "the store is closed");
    this.connection ??= this.connect();
    try {
      return (await this.connection).sftp;
    } catch (e) {
      this.connection = undefined;
      throw e;
    }
  }

  private fail(operation: ObjectStoreOperation, key: string, err: unknown): ObjectStoreError {
    if (err instanceof ObjectStoreError) return err;
    let kind: ObjectStoreErrorKind;
    const status = statusOf(err);
    const message = err instanceof Error ? err.message : String(err);
    if (err instanceof ConnectError) kind = err.kind;
    else if (err instanceof ShortRead) kind = "unavailable";
    else if (status === PERMISSION_DENIED) kind = "unauthorised";
    else if (status === NO_CONNECTION || status === CONNECTION_LOST) kind = "unavailable";
    else if (status === undefined && /not connected|no response|closed|ECONN|EPIPE|ETIMEDOUT|timed out|channel/i.test(message)) kind = "unavailable";
    else kind = "other";
    // A short read says nothing about the connection, which other calls may be using.
    if (kind === "unavailable" && !(err instanceof ShortRead)) this.dropConnection();
    let hint = "";
    if (status === PERMISSION_DENIED) hint = `; permission denied: check the owner and mode of ${this.root} on the server`;
    else if (err instanceof ShortRead) hint = "; read twice, short both times";
    else if (kind === "unavailable") hint = "; is the server reachable?";
    const subject = key === "" ? operation : `${operation} "${key}"`;
    const text = redact(`object store: ${subject} failed on ${this.description}: ${message}${hint}`, this.secrets);
    return new ObjectStoreError(operation, key, kind, text);
  }

  private dropConnection(): void {
    const c = this.connection;
    this.connection = undefined;
    void c?.then((conn) => conn.client.end(), () => {});
  }

  /** The remote file of `key`, after checking the key names a file inside the directory (as the local store does). */
  private fileOf(operation: ObjectStoreOperation, key: string, shown = key): string {
    return `${this.root === "/" ? "" : this.root}/${keyParts(operation, key, this.description, shown).join("/")}`;
  }

  private async statOrUndefined(sftp: SFTPWrapper, file: string): Promise<Stats | undefined> {
    try {
      return await call<Stats>(sftp, (done) => sftp.stat(file, done));
    } catch (e) {
      if (statusOf(e) === NO_SUCH_FILE) return undefined;
      throw e;
    }
  }

  /** mkdir -p: every missing directory from the root down to `dir`. */
  private async makeDirs(sftp: SFTPWrapper, dir: string): Promise<void> {
    const st = await this.statOrUndefined(sftp, dir);
    if (st !== undefined) {
      if (!st.isDirectory()) throw new ObjectStoreError("put", dir, "other", `object store: ${dir} on ${this.description} is not a directory; the key collides with another key used as a directory`);
      return;
    }
    const parent = dir.slice(0, dir.lastIndexOf("/"));
    if (parent !== "" && parent !== dir) await this.makeDirs(sftp, parent);
    try {
      await call<void>(sftp, (done) => sftp.mkdir(dir, { mode: 0o700 }, done));
    } catch (e) {
      if ((await this.statOrUndefined(sftp, dir))?.isDirectory() !== true) throw e; // made meanwhile by another call
    }
  }

  async prepare(): Promise<void> {
    try {
      const sftp = await this.sftp();
      await this.makeDirs(sftp, this.root);
    } catch (e) {
      throw this.fail("prepare", "", e);
    }
  }

  /** Writes `body` to a new temporary file beside `file`, fsynced, with an mtime that makes the etag new. */
  private async writeTemp(sftp: SFTPWrapper, file: string, body: Uint8Array): Promise<{ temp: string; mtime: number }> {
    const dir = file.slice(0, file.lastIndexOf("/")) || "/";
    const temp = `${dir}/${TEMP_PREFIX}${file.slice(dir.length + 1)}-${process.pid}-${randomUUID()}`;
    let handle: Buffer;
    try {
      handle = await call<Buffer>(sftp, (done) => sftp.open(temp, "wx", { mode: 0o600 }, done));
    } catch (e) {
      if (statusOf(e) !== NO_SUCH_FILE) throw e;
      await this.makeDirs(sftp, dir);
      handle = await call<Buffer>(sftp, (done) => sftp.open(temp, "wx", { mode: 0o600 }, done));
    }
    try {
      const data = Buffer.from(body.buffer, body.byteOffset, body.byteLength);
      await writeAll(sftp, handle, data);
      // The etag is size and mtime (SFTP has no inode): a replace within the same second moves mtime past the old.
      const old = await this.statOrUndefined(sftp, file);
      const now = Math.floor(Date.now() / 1000);
      const mtime = old !== undefined && old.mtime >= now ? old.mtime + 1 : now;
      await call<void>(sftp, (done) => sftp.fsetstat(handle, { mtime, atime: mtime }, done));
      await call<void>(sftp, (done) => sftp.ext_openssh_fsync(handle, (err) => done(err)));
      return { temp, mtime };
    } catch (e) {
      await call<void>(sftp, (done) => sftp.unlink(temp, done)).catch(() => {});
      throw e;
    } finally {
      await call<void>(sftp, (done) => sftp.close(handle, done)).catch(() => {});
    }
  }

  async put(key: string, body: Uint8Array): Promise<{ readonly etag: string }> {
    const file = this.fileOf("put", key);
    try {
      const sftp = await this.sftp();
      const { temp, mtime } = await this.writeTemp(sftp, file, body);
      try {
        await call<void>(sftp, (done) => sftp.ext_openssh_rename(temp, file, done));
      } catch (e) {
        await call<void>(sftp, (done) => sftp.unlink(temp, done)).catch(() => {});
        throw e;
      }
      return { etag: etagOf({ size: body.byteLength, mtime }) };
    } catch (e) {
      throw this.fail("put", key, e);
    }
  }

  async createIfAbsent(key: string, body: Uint8Array): Promise<CreateResult> {
    const file = this.fileOf("create", key);
    try {
      const sftp = await this.sftp();
      if ((await this.statOrUndefined(sftp, file))?.isFile() === true) return { outcome: "exists" };
      const { temp, mtime } = await this.writeTemp(sftp, file, body);
      try {
        await call<void>(sftp, (done) => sftp.rename(temp, file, done));
        return { outcome: "created", etag: etagOf({ size: body.byteLength, mtime }) };
      } catch (e) {
        await call<void>(sftp, (done) => sftp.unlink(temp, done)).catch(() => {});
        if ((await this.statOrUndefined(sftp, file))?.isFile() === true) return { outcome: "exists" };
        throw e;
      }
    } catch (e) {
      throw this.fail("create", key, e);
    }
  }

  async get(key: string, range?: ByteRange): Promise<GetResult | undefined> {
    const file = this.fileOf("get", key);
    checkRange("get", key, range);
    // A connection lost mid-read, or a file that ends before the size it had when opened: fetched once more (on a
    // new connection when it was lost), then a retryable error; never part of an object handed back as the object.
    for (let attempt = 1; ; attempt++) {
      const progress = { opened: false };
      try {
        return await this.getOnce(file, range, progress);
      } catch (e) {
        const failure = this.fail("get", key, e);
        // Only a read under way is tried again: a server that refuses connections is not asked twice per call.
        if (attempt === 1 && progress.opened && failure.kind === "unavailable") continue;
        throw failure;
      }
    }
  }

  private async getOnce(file: string, range: ByteRange | undefined, progress: { opened: boolean }): Promise<GetResult | undefined> {
    const sftp = await this.sftp();
    let handle: Buffer;
    try {
      handle = await call<Buffer>(sftp, (done) => sftp.open(file, "r", done));
    } catch (e) {
      if (statusOf(e) === NO_SUCH_FILE) return undefined;
      throw e;
    }
    progress.opened = true;
    try {
      const st = await call<Stats>(sftp, (done) => sftp.fstat(handle, done));
      if (!st.isFile()) return undefined;
      const start = Math.min(range?.offset ?? 0, st.size);
      const end = range === undefined ? st.size : Math.min(start + range.length, st.size);
      const body = await readExactly(sftp, handle, start, end - start, st.size);
      return { body: new Uint8Array(body.buffer, body.byteOffset, body.byteLength), etag: etagOf(st), size: st.size };
    } finally {
      await call<void>(sftp, (done) => sftp.close(handle, done)).catch(() => {});
    }
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    const file = this.fileOf("head", key);
    try {
      const st = await this.statOrUndefined(await this.sftp(), file);
      return st?.isFile() === true ? { key, size: st.size, etag: etagOf(st) } : undefined;
    } catch (e) {
      throw this.fail("head", key, e);
    }
  }

  async delete(key: string): Promise<void> {
    const file = this.fileOf("delete", key);
    try {
      const sftp = await this.sftp();
      await call<void>(sftp, (done) => sftp.unlink(file, done));
    } catch (e) {
      // A missing file, or a directory of other keys: no object either way.
      if (statusOf(e) === NO_SUCH_FILE) return;
      if (statusOf(e) !== undefined && (await this.statOrUndefined(await this.sftp(), file).catch(() => undefined))?.isDirectory() === true) return;
      throw this.fail("delete", key, e);
    }
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    const slash = prefix.lastIndexOf("/");
    const dirKey = slash < 0 ? "" : prefix.slice(0, slash);
    if (slash >= 0) this.fileOf("list", dirKey, prefix);
    let sftp: SFTPWrapper;
    try {
      sftp = await this.sftp();
    } catch (e) {
      throw this.fail("list", prefix, e);
    }
    yield* this.walk(sftp, dirKey, prefix.slice(slash + 1), prefix);
  }

  /** Objects under `dirKey` whose name starts with `namePrefix`, in key byte order (a directory `d` sorts as `d/`). */
  private async *walk(sftp: SFTPWrapper, dirKey: string, namePrefix: string, prefix: string): AsyncGenerator<ObjectInfo> {
    const dir = dirKey === "" ? this.root : `${this.root === "/" ? "" : this.root}/${dirKey}`;
    let entries: FileEntryWithStats[];
    try {
      entries = await call<FileEntryWithStats[]>(sftp, (done) => sftp.readdir(dir, done));
    } catch (e) {
      if (statusOf(e) === NO_SUCH_FILE) return;
      throw this.fail("list", prefix, e);
    }
    const items = entries
      .filter((e) => e.filename !== "." && e.filename !== ".." && e.filename.startsWith(namePrefix) && !e.filename.startsWith(TEMP_PREFIX))
      .map((e) => ({ entry: e, type: (e.attrs.mode ?? 0) & S_IFMT }))
      .filter((e) => e.type === S_IFDIR || e.type === S_IFREG)
      .map((e) => ({ ...e, order: Buffer.from(e.type === S_IFDIR ? `${e.entry.filename}/` : e.entry.filename) }));
    items.sort((a, b) => Buffer.compare(a.order, b.order));
    for (const item of items) {
      const key = dirKey === "" ? item.entry.filename : `${dirKey}/${item.entry.filename}`;
      if (item.type === S_IFDIR) yield* this.walk(sftp, key, "", prefix);
      else yield { key, size: item.entry.attrs.size, etag: etagOf(item.entry.attrs) };
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.dropConnection();
  }
}
