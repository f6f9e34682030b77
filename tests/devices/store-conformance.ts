/**
 * azurite is only ever started by tests/helpers/azurite-server.ts, always with --disableTelemetry (no traffic off the machine).
 * The store conformance suite: what every ObjectStore backend must do, run by each backend's test file against a
 * real server (local directory, s3rver, Swift's s3api, azurite, Swift, sshd). A backend that cannot do something
 * says so in its target (conditional create), and the suite then checks that it says so honestly.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { ObjectStoreError, type ObjectInfo, type ObjectStore, type ObjectStoreErrorKind } from "../../src/devices/objstore/store/types.ts";

export interface StoreTarget {
  readonly name: string;
  /** A store in bucket/container/directory `name`, not prepared; `listPageSize` asks for small list pages. */
  open(name: string, options?: { readonly listPageSize?: number }): ObjectStore;
  /** Whether the bucket (container, directory) `name` exists, asked of the server directly. */
  exists(name: string): Promise<boolean>;
  /**
   * `atomic`: createIfAbsent works, also for racing creates; `sequential`: a create after another has finished fails,
   * overlapping ones may all succeed, and the store says so in `createCaveat`; `unsupported`: it answers so and
   * writes nothing.
   */
  readonly conditionalCreate: "atomic" | "sequential" | "unsupported";
  /** Whether "a/x" and "a/x/deeper" may both be objects (object stores: yes; a file tree: no). */
  readonly fileAndDirectoryKeys: boolean;
  /** s3rver answers a ranged GET of an empty object with a body it never sends; the others answer properly. */
  readonly emptyObjectRanges?: boolean;
  /** A store on the same server with a wrong secret (key, password, token): every call fails `unauthorised`. */
  wrongCredentials?(name: string): ObjectStore;
  /** A store whose server is not listening: every call fails `unavailable`, within seconds. */
  unreachable?(): ObjectStore;
  /** A store whose bucket was never created (no prepare): get fails `not-found` (not "no such object"). */
  readonly missingBucketIsError?: boolean;
}

export function bytes(length: number, seed = 1): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed * 2654435761;
  for (let i = 0; i < length; i++) out[i] = (x = (x * 1103515245 + 12345) >>> 0) >>> 24;
  return out;
}

export async function collect(items: AsyncIterable<ObjectInfo>): Promise<ObjectInfo[]> {
  const out: ObjectInfo[] = [];
  for await (const item of items) out.push(item);
  return out;
}

/** The ObjectStoreError `promise` rejects with. */
export async function failure(promise: Promise<unknown>): Promise<ObjectStoreError> {
  try {
    await promise;
  } catch (e) {
    if (e instanceof ObjectStoreError) return e;
    throw new Error(`expected an ObjectStoreError, got ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
  }
  throw new Error("expected a failure");
}

function byteOrder(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

/** Registers the suite for `target`; `secrets` are strings no error message may contain. */
export function storeConformance(target: StoreTarget, secrets: readonly string[] = []): void {
  const opened: ObjectStore[] = [];
  const open = (name: string, options?: { listPageSize?: number }): ObjectStore => {
    const store = target.open(name, options);
    opened.push(store);
    return store;
  };
  const expectKind = async (promise: Promise<unknown>, kind: ObjectStoreErrorKind): Promise<ObjectStoreError> => {
    const error = await failure(promise);
    expect({ kind: error.kind, message: error.message }).toEqual({ kind, message: expect.any(String) });
    expect(error.retryable).toBe(kind === "unavailable");
    for (const secret of secrets) expect(error.message).not.toContain(secret);
    return error;
  };

  describe(`store conformance: ${target.name}`, () => {
    let store: ObjectStore;
    beforeAll(async () => {
      store = open("contract");
      await store.prepare();
    });
    afterAll(() => {
      for (const o of opened) o.close();
    });

    test("put then get returns the bytes, the put's etag and the size", async () => {
      const body = bytes(10_000);
      const { etag } = await store.put("whole/a", body);
      expect(etag).not.toBe("");
      const got = await store.get("whole/a");
      expect(got?.body).toEqual(body);
      expect(got?.etag).toBe(etag);
      expect(got?.size).toBe(10_000);
    });

    test("a larger object (3 MiB) comes back whole and in ranges", async () => {
      const body = bytes(3 << 20, 9);
      await store.put("big/a", body);
      expect((await store.get("big/a"))?.body).toEqual(body);
      const range = await store.get("big/a", { offset: (1 << 20) + 7, length: 1 << 20 });
      expect(range?.body).toEqual(body.subarray((1 << 20) + 7, (2 << 20) + 7));
      expect(range?.size).toBe(3 << 20);
    });

    test("ranges: the middle, one running past the end, one starting past it, an empty one", async () => {
      const body = bytes(10_000, 2);
      const { etag } = await store.put("range/a", body);
      expect(await store.get("range/a", { offset: 100, length: 50 })).toEqual({ body: body.subarray(100, 150), etag, size: 10_000 });
      expect(await store.get("range/a", { offset: 0, length: 1 })).toEqual({ body: body.subarray(0, 1), etag, size: 10_000 });
      expect(await store.get("range/a", { offset: 9_990, length: 100 })).toEqual({ body: body.subarray(9_990), etag, size: 10_000 });
      expect(await store.get("range/a", { offset: 20_000, length: 10 })).toEqual({ body: new Uint8Array(0), etag, size: 10_000 });
      expect(await store.get("range/a", { offset: 5, length: 0 })).toEqual({ body: new Uint8Array(0), etag, size: 10_000 });
      expect(await store.get("range/missing", { offset: 0, length: 10 })).toBeUndefined();
      expect((await failure(store.get("range/a", { offset: -1, length: 5 }))).kind).toBe("other");
    });

    test("an empty object", async () => {
      const { etag } = await store.put("empty/a", new Uint8Array(0));
      expect(await store.get("empty/a")).toEqual({ body: new Uint8Array(0), etag, size: 0 });
      if (target.emptyObjectRanges !== false) expect(await store.get("empty/a", { offset: 0, length: 10 })).toEqual({ body: new Uint8Array(0), etag, size: 0 });
      expect(await store.head("empty/a")).toEqual({ key: "empty/a", size: 0, etag });
    });

    test("head gives size and etag; the etag changes when the object is replaced", async () => {
      const first = await store.put("head/a", bytes(4096, 3));
      expect(await store.head("head/a")).toEqual({ key: "head/a", size: 4096, etag: first.etag });
      // Same size, other bytes: S3's etag is the MD5, so only a change of content is sure to change it there.
      const second = await store.put("head/a", bytes(4096, 4));
      expect(second.etag).not.toBe(first.etag);
      expect(await store.head("head/a")).toEqual({ key: "head/a", size: 4096, etag: second.etag });
      expect((await store.get("head/a"))?.etag).toBe(second.etag);
      expect((await store.get("head/a"))?.body).toEqual(bytes(4096, 4));
    });

    test("missing objects: get and head give undefined, deleting one is fine", async () => {
      expect(await store.get("missing/a")).toBeUndefined();
      expect(await store.head("missing/a")).toBeUndefined();
      await store.delete("missing/a");
      await store.delete("missing-dir/deeper/a");
      await store.put("missing/b", bytes(10));
      await store.delete("missing/b");
      await store.delete("missing/b");
      expect(await store.head("missing/b")).toBeUndefined();
      expect(await store.get("missing/b")).toBeUndefined();
      expect(await collect(store.list("missing/"))).toEqual([]);
    });

    test("list: keys under the prefix, in byte order, with sizes and etags", async () => {
      const keys = ["ls/b", "ls/a/y", "ls/c", "ls/a-c", "ls/a/x", "ls/a/x/deeper", "lsx", "ls-", "ls/a.b", "ls/A"];
      const written = target.fileAndDirectoryKeys ? keys : keys.filter((k) => k !== "ls/a/x/deeper");
      const etags = new Map<string, string>();
      for (const [i, key] of written.entries()) etags.set(key, (await store.put(key, bytes(i + 1, i))).etag);
      const expected = written.filter((k) => k.startsWith("ls/")).sort(byteOrder);
      const listed = await collect(store.list("ls/"));
      expect(listed.map((o) => o.key)).toEqual(expected);
      for (const item of listed) {
        expect(item.etag).toBe(etags.get(item.key)!);
        expect(item.size).toBe(written.indexOf(item.key) + 1);
      }
      // A prefix that ends inside a name, not at a "/".
      expect((await collect(store.list("ls/a"))).map((o) => o.key)).toEqual(expected.filter((k) => k.startsWith("ls/a")));
      expect(await collect(store.list("nothing-here/"))).toEqual([]);
    });

    test("list pages through more keys than fit in one answer", async () => {
      const paged = open("contract", { listPageSize: 7 });
      await paged.prepare();
      const keys = Array.from({ length: 23 }, (_, i) => `page/${i.toString(16).padStart(4, "0")}`);
      for (let i = 0; i < keys.length; i += 8) await Promise.all(keys.slice(i, i + 8).map((key) => store.put(key, bytes(3))));
      expect((await collect(paged.list("page/"))).map((o) => o.key)).toEqual(keys);
      expect((await collect(paged.list("page/000"))).map((o) => o.key)).toEqual(keys.slice(0, 16));
    });

    test("prepare creates the bucket or directory, and may run again", async () => {
      const name = `fresh-${Date.now().toString(36)}`;
      expect(await target.exists(name)).toBe(false);
      const fresh = open(name);
      await fresh.prepare();
      expect(await target.exists(name)).toBe(true);
      await fresh.prepare();
      await fresh.put("x/y", bytes(5));
      expect((await fresh.get("x/y"))?.body).toEqual(bytes(5));
    });

    test("parallel puts and gets", async () => {
      const keys = Array.from({ length: 24 }, (_, i) => `parallel/${i}`);
      await Promise.all(keys.map((key, i) => store.put(key, bytes(1000 + i, i))));
      const got = await Promise.all(keys.map((key) => store.get(key)));
      got.forEach((g, i) => expect(g?.body).toEqual(bytes(1000 + i, i)));
    });

    if (target.conditionalCreate !== "unsupported") {
      test("createIfAbsent: the first create writes, a second one of the same name fails and changes nothing", async () => {
        const first = await store.createIfAbsent("lease/epoch-1", bytes(100, 1));
        expect(first.outcome).toBe("created");
        const got = await store.get("lease/epoch-1");
        expect(got?.body).toEqual(bytes(100, 1));
        if (first.outcome === "created") expect(got?.etag).toBe(first.etag);
        expect(await store.createIfAbsent("lease/epoch-1", bytes(50, 2))).toEqual({ outcome: "exists" });
        expect((await store.get("lease/epoch-1"))?.body).toEqual(bytes(100, 1));
        // After a delete the name is free again; over an object written by put, a create fails too.
        await store.delete("lease/epoch-1");
        expect((await store.createIfAbsent("lease/epoch-1", bytes(10, 3))).outcome).toBe("created");
        await store.put("lease/put", bytes(10, 4));
        expect(await store.createIfAbsent("lease/put", bytes(10, 5))).toEqual({ outcome: "exists" });
        expect((await store.get("lease/put"))?.body).toEqual(bytes(10, 4));
        expect(store.createCaveat === undefined).toBe(target.conditionalCreate === "atomic");
      });
    }

    if (target.conditionalCreate === "atomic") {
      test("createIfAbsent: of racing creates of one name, exactly one wins, and its bytes are there", async () => {
        const racers = Array.from({ length: 8 }, (_, i) => bytes(2000, 10 + i));
        // Each racer through its own store (own connections), as two daemons would be.
        const stores = racers.map(() => open("contract"));
        const results = await Promise.all(stores.map((s, i) => s.createIfAbsent("lease/race", racers[i]!)));
        const winners = results.flatMap((r, i) => (r.outcome === "created" ? [i] : []));
        expect(winners.length).toBe(1);
        expect(results.filter((r) => r.outcome === "exists").length).toBe(racers.length - 1);
        expect((await store.get("lease/race"))?.body).toEqual(racers[winners[0]!]!);
      });
    } else if (target.conditionalCreate === "sequential") {
      test("createIfAbsent: overlapping creates may all win (the caveat says so), and one racer's bytes stay whole", async () => {
        const racers = Array.from({ length: 8 }, (_, i) => bytes(2000, 10 + i));
        const stores = racers.map(() => open("contract"));
        const results = await Promise.all(stores.map((s, i) => s.createIfAbsent("lease/race", racers[i]!)));
        expect(results.filter((r) => r.outcome === "created").length).toBeGreaterThanOrEqual(1);
        const stored = (await store.get("lease/race"))?.body;
        expect(racers.some((r) => Buffer.from(r).equals(Buffer.from(stored ?? [])))).toBe(true);
        expect(store.createCaveat).toContain("overlap");
      });
    }

    if (target.conditionalCreate === "unsupported") {
      test("createIfAbsent: says it cannot create conditionally, and writes nothing", async () => {
        const result = await store.createIfAbsent("lease/unsupported", bytes(10));
        expect(result.outcome).toBe("unsupported");
        if (result.outcome === "unsupported") expect(result.reason.length).toBeGreaterThan(10);
        expect(await store.head("lease/unsupported")).toBeUndefined();
        expect((await store.createIfAbsent("lease/unsupported", bytes(10))).outcome).toBe("unsupported");
      });
    }

    test("no temporary or probe objects are left in listings", async () => {
      const all = await collect(store.list(""));
      expect(all.filter((o) => /(^|\/)\.usbd-/.test(o.key))).toEqual([]);
    });

    if (target.wrongCredentials !== undefined) {
      const wrong = target.wrongCredentials;
      test("wrong credentials: every call fails unauthorised, without the secret in the message", async () => {
        const bad = wrong("contract");
        opened.push(bad);
        await expectKind(bad.prepare(), "unauthorised");
        await expectKind(bad.get("whole/a"), "unauthorised");
        await expectKind(bad.put("wrong/a", bytes(3)), "unauthorised");
        await expectKind(collect(bad.list("whole/")), "unauthorised");
        expect(await store.head("wrong/a")).toBeUndefined();
      });
    }

    if (target.unreachable !== undefined) {
      const unreachable = target.unreachable;
      test("nothing listening: calls fail unavailable (retry) within seconds", async () => {
        const dead = unreachable();
        opened.push(dead);
        const started = Date.now();
        const error = await expectKind(dead.put("vol/manifest.json", bytes(10)), "unavailable");
        expect(error.operation).toBe("put");
        expect(error.key).toBe("vol/manifest.json");
        expect(error.message).toContain("vol/manifest.json");
        await expectKind(dead.get("vol/manifest.json"), "unavailable");
        await expectKind(collect(dead.list("vol/")), "unavailable");
        expect(Date.now() - started).toBeLessThan(15_000);
      }, 30_000);
    }

    if (target.missingBucketIsError === true) {
      test("a bucket that does not exist is an error (not-found), not a missing object", async () => {
        const never = open(`never-${Date.now().toString(36)}`);
        await expectKind(never.get("a/b"), "not-found");
        await expectKind(never.put("a/b", bytes(3)), "not-found");
      });
    }

    test("close is idempotent", () => {
      const s = open("contract");
      s.close();
      s.close();
    });
  });
}
