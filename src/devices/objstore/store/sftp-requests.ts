/**
 * SFTP requests for the sftp store (sftp.ts): each one a promise that fails when its connection goes, and the
 * parallel reads and writes of one file, where a read that ends before the file's size is an error, never a short
 * object.
 */
import type { SFTPWrapper } from "ssh2";
import type { ObjectStoreErrorKind } from "./types.ts";

/** Bytes per SFTP read or write request, and how many are in flight at once on the channel. */
const CHUNK = 255 << 10;
const IN_FLIGHT = 16;
/** An SFTP request answers within this, or the connection counts as dead (a server that stopped answering). */
const REQUEST_TIMEOUT_MS = 60_000;

/** A failed connect or a lost connection, with what kind of failure it was. */
export class ConnectError extends Error {
  constructor(
    readonly kind: ObjectStoreErrorKind,
    message: string,
  ) {
    super(message);
  }
}

/**
 * A read that came back with fewer bytes than the open file's size promised. The handle's file is the one fstat
 * measured (a put renames a new file over the name, it never rewrites one), so this is a server fault or a file
 * changed in place on the server: retryable, as a fresh open measures the file again.
 */
export class ShortRead extends Error {}

/** The requests waiting for an answer on each SFTP channel, failed at once when its connection goes. */
const pending = new WeakMap<SFTPWrapper, Set<(err: Error) => void>>();

/** Starts tracking the requests on a new channel. */
export function trackRequests(sftp: SFTPWrapper): void {
  pending.set(sftp, new Set());
  sftp.on("close", () => connectionLost(sftp));
}

/**
 * One SFTP request as a promise. ssh2 does not always answer requests that were in flight when the connection
 * dropped (seen with the server's session process killed mid-upload): those fail when the connection closes, or
 * after REQUEST_TIMEOUT_MS at the latest, so an upload never waits forever.
 */
export function call<T>(sftp: SFTPWrapper, run: (done: (err: Error | null | undefined, value?: T) => void) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const waiting = pending.get(sftp);
    if (waiting === undefined) return reject(new ConnectError("unavailable", "the connection to the server was lost"));
    let finished = false;
    const settle = (err: Error | null | undefined, value?: T): void => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      waiting.delete(lost);
      if (err) reject(err);
      else resolve(value as T);
    };
    const lost = (err: Error): void => settle(err);
    const timer = setTimeout(() => settle(new ConnectError("unavailable", `no answer from the server within ${REQUEST_TIMEOUT_MS / 1000} s`)), REQUEST_TIMEOUT_MS);
    waiting.add(lost);
    try {
      run(settle);
    } catch (e) {
      settle(e instanceof Error ? e : new Error(String(e)));
    }
  });
}

/** Fails every request still waiting on `sftp`; later requests on it fail at once. */
export function connectionLost(sftp: SFTPWrapper): void {
  const waiting = pending.get(sftp);
  pending.delete(sftp);
  for (const fail of waiting ?? []) fail(new ConnectError("unavailable", "the connection to the server was lost"));
}

/** Writes all of `data` at the start of the open file `handle`, CHUNK by CHUNK, IN_FLIGHT at once. */
export async function writeAll(sftp: SFTPWrapper, handle: Buffer, data: Buffer): Promise<void> {
  await inParallel(Math.ceil(data.byteLength / CHUNK), (i) => {
    const offset = i * CHUNK;
    const length = Math.min(CHUNK, data.byteLength - offset);
    return call<void>(sftp, (done) => sftp.write(handle, data, offset, length, offset, (err) => done(err)));
  });
}

/**
 * Bytes `start .. start+length-1` of the open file `handle`, all of them: a read that ends early (0 bytes before
 * the end) is a ShortRead, and a lost connection a ConnectError, never a body with a piece missing.
 */
export async function readExactly(sftp: SFTPWrapper, handle: Buffer, start: number, length: number, size: number): Promise<Buffer> {
  const body = Buffer.alloc(length);
  await inParallel(Math.ceil(length / CHUNK), async (i) => {
    const offset = i * CHUNK;
    const want = Math.min(CHUNK, length - offset);
    for (let done = 0; done < want; ) {
      const n = await call<number>(sftp, (cb) => sftp.read(handle, body, offset + done, want - done, start + offset + done, (err, bytes) => cb(err, bytes)));
      if (n === 0) throw new ShortRead(`the file ended at byte ${start + offset + done}, before the ${size} bytes it had when opened (changed in place on the server?)`);
      done += n;
    }
  });
  return body;
}

/** Runs `task(0 .. count-1)` with at most IN_FLIGHT at once; rejects with the first failure once all have settled. */
async function inParallel(count: number, task: (index: number) => Promise<void>): Promise<void> {
  let next = 0;
  let failed: unknown;
  const worker = async (): Promise<void> => {
    while (next < count && failed === undefined) {
      const index = next++;
      try {
        await task(index);
      } catch (e) {
        failed ??= e;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(IN_FLIGHT, count) }, worker));
  if (failed !== undefined) throw failed;
}
