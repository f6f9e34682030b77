/**
 * The ObjectStore over a local directory (a disk, or a mounted network share): key `a/b/c` is file `<dir>/a/b/c`.
 * A put is durable and atomic: the body goes to a temporary file in the same directory, is fsynced and renamed into
 * place, and the directory is fsynced, so a crash leaves either the old object or the new one, never a torn one.
 */
import fs from "node:fs";
import fsp, { type FileHandle } from "node:fs/promises";
import path from "node:path";
import { TEMP_PREFIX, keyParts } from "./common.ts";
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

/** errno codes of conditions that can go away by themselves (a flaky disk or share, a full descriptor table). */
const RETRY_CODES = new Set(["EIO", "EAGAIN", "EBUSY", "EINTR", "EMFILE", "ENFILE", "ETIMEDOUT", "ESTALE", "ENOLCK"]);

type Operation = ObjectStoreOperation;

function codeOf(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : undefined;
}

/** The object is not there: a missing file, or a path through something that is not a directory. */
function isMissing(err: unknown): boolean {
  const code = codeOf(err);
  return code === "ENOENT" || code === "ENOTDIR";
}

function etagOf(st: fs.BigIntStats): string {
  // A put renames a new file into place, so the inode changes even when size and mtime happen to match.
  return `${st.ino.toString(16)}-${st.mtimeNs.toString(16)}-${st.size.toString(16)}`;
}

/** fsyncs a directory, so that entries created, renamed or removed in it survive a crash. */
async function syncDir(dir: string): Promise<void> {
  const handle = await fsp.open(dir, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** An ObjectStore in a directory; etags are `<inode>-<mtime ns>-<size>` in hex, new with every put. */
export class LocalObjectStore implements ObjectStore {
  readonly directory: string;
  readonly description: string;

  constructor(directory: string) {
    this.directory = path.resolve(directory);
    this.description = `local directory ${this.directory}`;
  }

  private fail(operation: Operation, key: string, err: unknown): ObjectStoreError {
    if (err instanceof ObjectStoreError) return err;
    const code = codeOf(err);
    const cause = err instanceof Error ? err.message : String(err);
    let hint = "";
    if (code === "EACCES" || code === "EPERM") hint = `; permission denied: check the owner and mode of ${this.directory} (path in --objstore-cfg)`;
    else if (code === "ENOSPC" || code === "EDQUOT") hint = `; the file system holding ${this.directory} is full`;
    else if (code === "EROFS") hint = `; ${this.directory} is on a read-only file system`;
    else if (code === "EEXIST" || code === "ENOTDIR" || code === "EISDIR") hint = "; the key collides with another key used as a directory";
    const subject = key === "" ? operation : `${operation} "${key}"`;
    let kind: ObjectStoreErrorKind = "other";
    if (code !== undefined && RETRY_CODES.has(code)) kind = "unavailable";
    else if (code === "EACCES" || code === "EPERM") kind = "unauthorised";
    return new ObjectStoreError(operation, key, kind, `object store: ${subject} failed on ${this.description}: ${cause}${hint}`, { cause: err });
  }

  /**
   * The file of `key`, after checking the key names a file inside the directory: no `.`/`..`/empty components, no
   * leading or trailing `/`, nothing that looks like a temporary file.
   */
  private fileOf(operation: Operation, key: string, shown = key): string {
    return path.join(this.directory, ...keyParts(operation, key, this.description, shown));
  }

  async prepare(): Promise<void> {
    try {
      await fsp.mkdir(this.directory, { recursive: true });
      const st = await fsp.stat(this.directory);
      if (!st.isDirectory()) throw new ObjectStoreError("prepare", "", "other", `object store: ${this.directory} exists and is not a directory`);
      // Finding out now that the directory is not writable beats finding out at the first upload.
      await fsp.access(this.directory, fs.constants.W_OK | fs.constants.R_OK | fs.constants.X_OK);
    } catch (e) {
      throw this.fail("prepare", "", e);
    }
  }

  async put(key: string, body: Uint8Array): Promise<{ readonly etag: string }> {
    const file = this.fileOf("put", key);
    let temp: string | undefined;
    try {
      const written = await this.writeTemp(file, body);
      temp = written.temp;
      await fsp.rename(temp, file);
      temp = undefined;
      await this.syncEntries(file, written.createdDir);
      return { etag: etagOf(written.st) };
    } catch (e) {
      if (temp !== undefined) await fsp.rm(temp, { force: true }).catch(() => {});
      throw this.fail("put", key, e);
    }
  }

  /**
   * The body goes to a temporary file beside the key's file, fsynced, then link(2) gives it the key's name: link
   * never replaces an existing name (EEXIST), so of racing creates exactly one wins, and the object is whole from
   * the moment it has its name.
   */
  async createIfAbsent(key: string, body: Uint8Array): Promise<CreateResult> {
    const file = this.fileOf("create", key);
    let temp: string | undefined;
    try {
      if (await this.isObjectAt(file)) return { outcome: "exists" };
      const written = await this.writeTemp(file, body);
      temp = written.temp;
      try {
        await fsp.link(temp, file);
      } catch (e) {
        if (codeOf(e) === "EEXIST" && (await this.isObjectAt(file))) return { outcome: "exists" };
        throw e;
      }
      await this.syncEntries(file, written.createdDir);
      return { outcome: "created", etag: etagOf(written.st) };
    } catch (e) {
      throw this.fail("create", key, e);
    } finally {
      if (temp !== undefined) await fsp.rm(temp, { force: true }).catch(() => {});
    }
  }

  /** Whether a file (an object) is at `file`; a directory of other keys is none. */
  private async isObjectAt(file: string): Promise<boolean> {
    try {
      return (await fsp.stat(file)).isFile();
    } catch (e) {
      if (isMissing(e)) return false;
      throw e;
    }
  }

  /** Writes `body` to a new, fsynced temporary file in the directory of `file` (created when missing). */
  private async writeTemp(file: string, body: Uint8Array): Promise<{ temp: string; st: fs.BigIntStats; createdDir: string | undefined }> {
    const dir = path.dirname(file);
    const temp = path.join(dir, `${TEMP_PREFIX}${path.basename(file)}-${process.pid}-${crypto.randomUUID()}`);
    const createdDir = await fsp.mkdir(dir, { recursive: true });
    const handle = await fsp.open(temp, "wx", 0o600);
    let st: fs.BigIntStats;
    try {
      try {
        await handle.writeFile(body);
        await handle.sync();
        st = await handle.stat({ bigint: true });
      } finally {
        await handle.close();
      }
    } catch (e) {
      await fsp.rm(temp, { force: true }).catch(() => {});
      throw e;
    }
    return { temp, st, createdDir };
  }

  /** fsyncs the new entry of `file` and that of every directory the write created, up to one that already existed. */
  private async syncEntries(file: string, createdDir: string | undefined): Promise<void> {
    const dir = path.dirname(file);
    const top = createdDir === undefined ? dir : path.dirname(createdDir);
    for (let d = dir; ; d = path.dirname(d)) {
      await syncDir(d);
      if (d === top || d === this.directory || d === path.dirname(d)) break;
    }
  }

  async get(key: string, range?: ByteRange): Promise<GetResult | undefined> {
    const file = this.fileOf("get", key);
    checkRange("get", key, range);
    let handle: FileHandle;
    try {
      handle = await fsp.open(file, "r");
    } catch (e) {
      if (isMissing(e)) return undefined;
      throw this.fail("get", key, e);
    }
    try {
      // Size, etag and bytes all from the one open file: a put renaming a new object into place meanwhile cannot mix.
      const st = await handle.stat({ bigint: true });
      if (!st.isFile()) return undefined;
      const size = Number(st.size);
      const start = Math.min(range?.offset ?? 0, size);
      const end = range === undefined ? size : Math.min(start + range.length, size);
      const body = new Uint8Array(end - start);
      for (let done = 0; done < body.length; ) {
        const { bytesRead } = await handle.read(body, done, body.length - done, start + done);
        if (bytesRead === 0) return { body: body.subarray(0, done), etag: etagOf(st), size };
        done += bytesRead;
      }
      return { body, etag: etagOf(st), size };
    } catch (e) {
      throw this.fail("get", key, e);
    } finally {
      await handle.close();
    }
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    const file = this.fileOf("head", key);
    try {
      const st = await fsp.stat(file, { bigint: true });
      return st.isFile() ? { key, size: Number(st.size), etag: etagOf(st) } : undefined;
    } catch (e) {
      if (isMissing(e)) return undefined;
      throw this.fail("head", key, e);
    }
  }

  async delete(key: string): Promise<void> {
    const file = this.fileOf("delete", key);
    try {
      await fsp.unlink(file);
    } catch (e) {
      // EISDIR/EPERM: the key names a directory of other keys, which is no object either.
      const code = codeOf(e);
      if (isMissing(e) || code === "EISDIR") return;
      if (code === "EPERM" && (await fsp.stat(file).catch(() => undefined))?.isDirectory()) return;
      throw this.fail("delete", key, e);
    }
    try {
      await syncDir(path.dirname(file));
    } catch (e) {
      throw this.fail("delete", key, e);
    }
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    const slash = prefix.lastIndexOf("/");
    const dirKey = slash < 0 ? "" : prefix.slice(0, slash);
    if (slash >= 0) this.fileOf("list", dirKey, prefix); // refuses a prefix that would leave the directory
    yield* this.walk(dirKey, prefix.slice(slash + 1), prefix);
  }

  /**
   * Objects under directory `dirKey` whose name starts with `namePrefix`, in the byte order of their keys (S3's
   * order). A subdirectory `d` sorts as `d/`, which is where every key inside it sorts, so the walk can stream.
   */
  private async *walk(dirKey: string, namePrefix: string, prefix: string): AsyncGenerator<ObjectInfo> {
    const dir = dirKey === "" ? this.directory : path.join(this.directory, ...dirKey.split("/"));
    let entries: fs.Dirent[];
    try {
      entries = await fsp.readdir(dir, { withFileTypes: true });
    } catch (e) {
      if (isMissing(e)) return;
      throw this.fail("list", prefix, e);
    }
    const items: { name: string; isDir: boolean; order: Buffer }[] = [];
    for (const entry of entries) {
      if (!entry.name.startsWith(namePrefix) || entry.name.startsWith(TEMP_PREFIX)) continue;
      let isDir = entry.isDirectory();
      if (!isDir && !entry.isFile()) {
        // Type not reported by the file system, or a symlink: ask stat what it points to.
        const st = await fsp.stat(path.join(dir, entry.name)).catch(() => undefined);
        if (st === undefined || (!st.isFile() && !st.isDirectory())) continue;
        isDir = st.isDirectory();
      }
      items.push({ name: entry.name, isDir, order: Buffer.from(isDir ? `${entry.name}/` : entry.name) });
    }
    items.sort((a, b) => Buffer.compare(a.order, b.order));
    for (const item of items) {
      const key = dirKey === "" ? item.name : `${dirKey}/${item.name}`;
      if (item.isDir) {
        yield* this.walk(key, "", prefix);
        continue;
      }
      let st: fs.BigIntStats;
      try {
        st = await fsp.stat(path.join(dir, item.name), { bigint: true });
      } catch (e) {
        if (isMissing(e)) continue; // deleted since readdir
        throw this.fail("list", prefix, e);
      }
      yield { key, size: Number(st.size), etag: etagOf(st) };
    }
  }

  close(): void {}
}
