// The objstore device's object stores: one contract run against the local directory and against S3 (s3rver), then
// what each backend does when things go wrong, then --objstore-cfg parsing and --objstore-kind presets.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import {
  ObjectStoreConfigError,
  describeObjectStoreConfig,
  openObjectStore,
  parseObjectStoreConfig,
  type ObjectStoreConfig,
} from "../../src/devices/objstore/store/config.ts";
import { LocalObjectStore } from "../../src/devices/objstore/store/local.ts";
import { redact } from "../../src/devices/objstore/store/redact.ts";
import { S3ObjectStore } from "../../src/devices/objstore/store/s3.ts";
import type { ObjectStore } from "../../src/devices/objstore/store/types.ts";
import { bytes, collect, failure, storeConformance, type StoreTarget } from "./store-conformance.ts";
import { CUT_OBJECT, startCuttingServer } from "../helpers/cutting-server.ts";
import { deadPort } from "../helpers/ports.ts";
import { S3RVER_KEY, s3ServerConfig, s3ServerConfigJson, startS3Server, type S3Server } from "../helpers/s3-server.ts";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "usbd-objstore-store-"));
let server: S3Server;
let deadEndpoint: string;
const opened: ObjectStore[] = [];
beforeAll(async () => {
  server = await startS3Server({ directory: path.join(dir, "s3rver") });
  deadEndpoint = `http://127.0.0.1:${await deadPort()}`;
});
afterAll(async () => {
  for (const store of opened) store.close();
  await server.cleanup();
  fs.rmSync(dir, { recursive: true, force: true });
});

function track<T extends ObjectStore>(store: T): T {
  opened.push(store);
  return store;
}

function s3Store(bucket: string, more: { listPageSize?: number; endpoint?: string; accessKeyId?: string; secretKey?: string; idleTimeoutMs?: number } = {}): S3ObjectStore {
  return track(
    new S3ObjectStore({
      bucket,
      endpoint: more.endpoint ?? server.endpoint,
      region: "us-east-1",
      pathStyle: true,
      credentials: { accessKeyId: more.accessKeyId ?? S3RVER_KEY, secretAccessKey: more.secretKey ?? S3RVER_KEY },
      listPageSize: more.listPageSize,
      idleTimeoutMs: more.idleTimeoutMs,
    }),
  );
}

const localTarget: StoreTarget = {
  name: "local",
  open: (name) => track(openObjectStore("local", { path: path.join(dir, "local", name) }, { localPath: "/nonexistent" })),
  exists: async (name) => fs.existsSync(path.join(dir, "local", name)),
  conditionalCreate: "atomic",
  fileAndDirectoryKeys: false,
};
storeConformance(localTarget);

storeConformance(
  {
    name: "s3 on s3rver",
    // Through the config path, so the config -> client wiring is what gets tested.
    open: (name, options) =>
      options?.listPageSize === undefined
        ? track(openObjectStore("s3", s3ServerConfig(server, name), { localPath: "/nonexistent" }))
        : s3Store(name, { listPageSize: options.listPageSize }),
    exists: async (name) => fs.existsSync(path.join(server.directory, name)),
    conditionalCreate: "atomic",
    fileAndDirectoryKeys: true,
    emptyObjectRanges: false,
    unreachable: () => s3Store("contract", { endpoint: deadEndpoint }),
    missingBucketIsError: true,
  },
  [],
);


describe("s3 store: failures", () => {
  test("more than 1000 keys: the default page size pages too", async () => {
    const store = s3Store("many");
    await store.prepare();
    const keys = Array.from({ length: 1100 }, (_, i) => `k/${i.toString(16).padStart(4, "0")}`);
    for (let i = 0; i < keys.length; i += 50) await Promise.all(keys.slice(i, i + 50).map((key) => store.put(key, bytes(1))));
    const listed = await collect(store.list("k/"));
    expect(listed.map((o) => o.key)).toEqual(keys);
  }, 30_000);

  test("nothing listening at the endpoint: a retryable error within seconds, naming key, endpoint and bucket", async () => {
    const endpoint = `http://127.0.0.1:${await deadPort()}`;
    const store = s3Store("contract", { endpoint });
    const started = Date.now();
    const error = await failure(store.put("vol/manifest.json", bytes(10)));
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(error.retryable).toBe(true);
    expect(error.operation).toBe("put");
    expect(error.key).toBe("vol/manifest.json");
    expect(error.message).toContain("vol/manifest.json");
    expect(error.message).toContain(endpoint);
    expect(error.message).toContain(`bucket "contract"`);
    expect(error.message).toContain("ECONNREFUSED");
    expect((await failure(store.prepare())).retryable).toBe(true);
    expect((await failure(collect(store.list("x/")))).retryable).toBe(true);
  });

  test("an endpoint that accepts and never answers: a retryable timeout, not a hang", async () => {
    const sockets: net.Socket[] = [];
    const silent = net.createServer((socket) => {
      sockets.push(socket);
      socket.on("data", () => {});
    });
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    try {
      const store = s3Store("contract", { endpoint: `http://127.0.0.1:${(silent.address() as net.AddressInfo).port}`, idleTimeoutMs: 300 });
      const started = Date.now();
      const error = await failure(store.get("vol/segments/0"));
      expect(Date.now() - started).toBeLessThan(4_000);
      expect(error.retryable).toBe(true);
      expect(error.message).toContain("timed out");
    } finally {
      for (const socket of sockets) socket.destroy();
      silent.close();
    }
  });

  test("the test server's PUT is all or nothing, as on S3: a PUT cut off mid-body leaves no object (tests/helpers/s3-server.ts)", async () => {
    const store = s3Store("cutput");
    await store.prepare();
    const url = new URL(server.endpoint);
    // A raw request (s3rver takes unsigned ones): 100 bytes of 1000, then the client is gone, as a SIGKILLed writer is.
    await new Promise<void>((resolve) => {
      const socket = net.connect(Number(url.port), url.hostname, () => {
        socket.write(`PUT /cutput/vol/log/1 HTTP/1.1\r\nHost: ${url.host}\r\nContent-Length: 1000\r\n\r\n${"a".repeat(100)}`);
        setTimeout(() => {
          socket.destroy();
          resolve();
        }, 100);
      });
    });
    await Bun.sleep(200);
    expect({ listed: await collect(store.list("vol/")), got: await store.get("vol/log/1") }).toEqual({ listed: [], got: undefined });
  });

  // A hand-made HTTP server (tests/helpers/cutting-server.ts), because s3rver cannot be made to cut a body off.
  test("a body cut off once is fetched again (the SDK's retry covers only the request)", async () => {
    const cutter = await startCuttingServer({ cut: 1 });
    try {
      const got = await s3Store("contract", { endpoint: cutter.url }).get("vol/log/1");
      expect({ body: got?.body, etag: got?.etag, gets: cutter.gets() }).toEqual({ body: new Uint8Array(CUT_OBJECT), etag: "abc", gets: 2 });
    } finally {
      cutter.close();
    }
  });

  test("a body cut off twice: a retryable error naming the key, not a short object", async () => {
    const cutter = await startCuttingServer({ cut: 2 });
    try {
      const error = await failure(s3Store("contract", { endpoint: cutter.url }).get("vol/log/1"));
      expect(error.retryable).toBe(true);
      expect(error.message).toMatch(/^object store: get "vol\/log\/1" failed on s3 bucket "contract" at http:\/\/127\.0\.0\.1:\d+: /);
      expect(cutter.gets()).toBe(2);
    } finally {
      cutter.close();
    }
  });

  // s3rver rejects an access key id it does not know (InvalidAccessKeyId, 403) but does not verify V4 signatures, so
  // a wrong secret_key (SignatureDoesNotMatch on a real service) cannot be tested against it.
  test("an unknown access key: not retryable, says what to check, never shows the secret", async () => {
    const store = s3Store("contract", { accessKeyId: "WRONGKEY", secretKey: "very-secret-value-123" });
    for (const error of [await failure(store.get("a/b")), await failure(store.head("a/b")), await failure(store.prepare())]) {
      expect(error.retryable).toBe(false);
      expect(error.message).toContain("403");
      expect(error.message).toContain("access_key_id/secret_key in --objstore-cfg");
      expect(error.message).not.toContain("very-secret-value-123");
    }
    expect((await failure(store.get("a/b"))).message).toContain("InvalidAccessKeyId");
  });

  test("a missing bucket is an error, not a missing object", async () => {
    const store = s3Store("never-prepared");
    const error = await failure(store.get("a/b"));
    expect(error.retryable).toBe(false);
    expect(error.message).toContain("NoSuchBucket");
    expect((await failure(store.put("a/b", bytes(3)))).retryable).toBe(false);
  });

  test("the server stops (retryable errors) and comes back (calls work again, data still there)", async () => {
    const store = s3Store("restart");
    await store.prepare();
    const { etag } = await store.put("a/b", bytes(100));
    await server.stop();
    try {
      expect((await failure(store.head("a/b"))).retryable).toBe(true);
      expect((await failure(store.put("a/c", bytes(5)))).retryable).toBe(true);
    } finally {
      await server.restart();
    }
    expect(await store.head("a/b")).toEqual({ key: "a/b", size: 100, etag });
    await store.put("a/c", bytes(5));
    expect((await collect(store.list("a/"))).map((o) => o.key)).toEqual(["a/b", "a/c"]);
  });

  test("close is idempotent", () => {
    const store = s3Store("contract");
    store.close();
    store.close();
  });
});

describe("s3 store: the body's digest", () => {
  // A loopback server that records what the SDK sends: s3rver checks Content-MD5 but neither signatures nor
  // x-amz-content-sha256, so only the request itself shows that the payload went unsigned and the MD5 signed.
  test("a PUT goes with its Content-MD5 signed and the payload unsigned (SigV4 does not hash the body again)", async () => {
    const seen: Array<{ method: string; headers: Record<string, string>; body: Uint8Array }> = [];
    const recorder = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      async fetch(request) {
        seen.push({ method: request.method, headers: Object.fromEntries(request.headers), body: new Uint8Array(await request.arrayBuffer()) });
        return new Response(null, { status: 200, headers: { ETag: '"abc"' } });
      },
    });
    try {
      const body = bytes(5000, 3);
      await s3Store("digest", { endpoint: `http://127.0.0.1:${recorder.port}` }).put("vol/log/1", body);
      const put = seen.find((r) => r.method === "PUT")!;
      const signed = /SignedHeaders=([^,]+)/.exec(put.headers.authorization ?? "")?.[1]?.split(";") ?? [];
      expect({
        sha256: put.headers["x-amz-content-sha256"],
        md5: put.headers["content-md5"],
        signsMd5: signed.includes("content-md5"),
        signsSha: signed.includes("x-amz-content-sha256"),
        body: put.body,
      }).toEqual({ sha256: "UNSIGNED-PAYLOAD", md5: createHash("md5").update(body).digest("base64"), signsMd5: true, signsSha: true, body });
    } finally {
      recorder.stop(true);
    }
  });
});

describe("local store: keys and files", () => {
  const root = path.join(dir, "local-only");
  const store = track(new LocalObjectStore(root));
  beforeAll(() => store.prepare());

  test("keys that could leave the directory, or are not plain paths, are refused", async () => {
    for (const key of ["../escape", "a/../../b", "a/..", "/etc/passwd", "a//b", "a/", "", "./a", ".usbd-tmp-x", "a/.usbd-tmp-y"]) {
      for (const attempt of [store.put(key, bytes(1)), store.get(key), store.head(key), store.delete(key)]) {
        const error = await failure(attempt);
        expect(error.retryable).toBe(false);
        expect(error.message).toContain("not allowed");
      }
    }
    expect((await failure(collect(store.list("../")))).retryable).toBe(false);
    expect((await failure(collect(store.list("/abs")))).retryable).toBe(false);
    expect(fs.existsSync(path.join(dir, "escape"))).toBe(false);
  });

  test("files land at <dir>/<key>; temporary files are never listed", async () => {
    await store.put("vol/segments/0001", bytes(7));
    expect(fs.readFileSync(path.join(root, "vol", "segments", "0001"))).toEqual(Buffer.from(bytes(7)));
    fs.writeFileSync(path.join(root, "vol", "segments", ".usbd-tmp-0002-123-abc"), "left by a crash");
    expect((await collect(store.list("vol/"))).map((o) => o.key)).toEqual(["vol/segments/0001"]);
    expect(fs.readdirSync(path.join(root, "vol", "segments")).filter((n) => n.startsWith(".usbd-tmp-0001"))).toEqual([]);
    expect((await store.head("vol/segments/0001"))?.etag).toMatch(/^[0-9a-f]+-[0-9a-f]+-[0-9a-f]+$/);
  });

  test("a key used both as an object and as a directory: a clear error, not retryable", async () => {
    await store.put("clash/a", bytes(1));
    const error = await failure(store.put("clash/a/b", bytes(1)));
    expect(error.retryable).toBe(false);
    expect(error.message).toContain("collides");
    expect(await store.get("clash")).toBeUndefined();
    expect(await store.head("clash")).toBeUndefined();
    await store.delete("clash");
  });

  test.skipIf(process.getuid?.() === 0)("a directory it may not write to: not retryable, says so", async () => {
    const locked = path.join(dir, "locked");
    fs.mkdirSync(locked, { mode: 0o500 });
    try {
      const error = await failure(new LocalObjectStore(locked).put("a", bytes(1)));
      expect(error.retryable).toBe(false);
      expect(error.message).toContain("permission denied");
    } finally {
      fs.chmodSync(locked, 0o700);
    }
  });
});

describe("--objstore-cfg and --objstore-kind", () => {
  const SECRET = "s3cr3t-Value/with+chars";
  const opts = { localPath: path.join(dir, "default-local") };

  function configError(run: () => unknown): ObjectStoreConfigError {
    try {
      run();
    } catch (e) {
      if (e instanceof ObjectStoreConfigError) {
        expect(e.message).not.toContain(SECRET);
        return e;
      }
      throw e;
    }
    throw new Error("expected an ObjectStoreConfigError");
  }

  test("absent: no settings (each kind has its defaults)", () => {
    expect(parseObjectStoreConfig(undefined)).toEqual({});
    expect(parseObjectStoreConfig("")).toEqual({});
  });

  test("inline JSON and a file give the same config", () => {
    const raw = { access_key_id: "AKID", secret_key: SECRET, session_token: SECRET, endpoint: "https://s3.example.com", region: "eu-west-1", bucket: "vols", path_style: false };
    const expected: ObjectStoreConfig = { accessKeyId: "AKID", secretKey: SECRET, sessionToken: SECRET, endpoint: "https://s3.example.com", region: "eu-west-1", bucket: "vols", pathStyle: false };
    expect(parseObjectStoreConfig(`  ${JSON.stringify(raw)}`)).toEqual(expected);
    const file = path.join(dir, "cfg.json");
    fs.writeFileSync(file, JSON.stringify(raw));
    expect(parseObjectStoreConfig(file)).toEqual(expected);
    expect(parseObjectStoreConfig(JSON.stringify({ path: "/srv/objects", namespace: "ns" }))).toEqual({ path: "/srv/objects", namespace: "ns" });
  });

  test("unreadable file, invalid JSON, not an object", () => {
    expect(configError(() => parseObjectStoreConfig(path.join(dir, "no-such.json"))).message).toContain(path.join(dir, "no-such.json"));
    expect(configError(() => parseObjectStoreConfig(`{"secret_key": ${SECRET}}`)).message).toContain("not valid JSON");
    expect(configError(() => parseObjectStoreConfig(`{"secret_key": "${SECRET}", }`)).message).toContain("not valid JSON");
    const file = path.join(dir, "bad.json");
    fs.writeFileSync(file, `{"secret_key": "${SECRET}`);
    expect(configError(() => parseObjectStoreConfig(file)).message).toContain(file);
    expect(configError(() => parseObjectStoreConfig(`{"a": 1`)).message).toContain("not valid JSON");
    fs.writeFileSync(file, `["a"]`);
    expect(configError(() => parseObjectStoreConfig(file)).message).toContain("JSON object");
  });

  test("unknown keys are named, with the accepted ones", () => {
    const error = configError(() => parseObjectStoreConfig(JSON.stringify({ bucket: "b", endpiont: "https://x" })));
    expect(error.message).toContain(`"endpiont"`);
    expect(error.message).toContain("access_key_id, secret_key, session_token, endpoint, region, bucket, path_style, path, namespace, account, key, sas");
    const alias = configError(() => parseObjectStoreConfig(JSON.stringify({ access_key_id: "a", secret_access_key: SECRET })));
    expect(alias.message).toContain(`did you mean "secret_key"`);
  });

  test("wrong types and inconsistent settings, without the values", () => {
    expect(configError(() => parseObjectStoreConfig(`{"path_style": "yes"}`)).message).toContain(`"path_style"`);
    expect(configError(() => parseObjectStoreConfig(`{"bucket": 5}`)).message).toContain("must be a string, not a number");
    expect(configError(() => parseObjectStoreConfig(JSON.stringify({ access_key_id: "a", secret_key: 12345 }))).message).toContain(`"secret_key"`);
    expect(configError(() => parseObjectStoreConfig(JSON.stringify({ secret_key: SECRET }))).message).toContain("only one of");
    expect(configError(() => parseObjectStoreConfig(JSON.stringify({ session_token: SECRET }))).message).toContain("session_token");
    expect(configError(() => parseObjectStoreConfig(`{"bucket": ""}`)).message).toContain("empty");
    expect(configError(() => parseObjectStoreConfig(`{"endpoint": "s3.example.com"}`)).message).toContain("endpoint");
    expect(configError(() => parseObjectStoreConfig(`{"endpoint": "https://user:${encodeURIComponent(SECRET)}@s3.example.com"}`)).message).toContain("credentials");
  });

  test("descriptions never hold a secret", () => {
    const config = parseObjectStoreConfig(JSON.stringify({ access_key_id: "AKID", secret_key: SECRET, session_token: SECRET, region: "eu-west-1" }));
    const line = describeObjectStoreConfig(config);
    expect(line).toContain("secret_key=<REDACTED>");
    expect(line).toContain("session_token=<REDACTED>");
    expect(line).toContain(`region="eu-west-1"`);
    expect(line).not.toContain(SECRET);
    expect(line).not.toContain("\n");
    const store = track(openObjectStore("s3", config, opts));
    expect(store.description).not.toContain(SECRET);
    expect(store.description).toContain(`bucket "usbd"`);
    expect(store.description).toContain("eu-west-1");
  });

  test("presets give the documented endpoints; an explicit endpoint wins", () => {
    const keys = { access_key_id: "AKID", secret_key: SECRET };
    const desc = (kind: string, raw: object) => track(openObjectStore(kind, parseObjectStoreConfig(JSON.stringify({ ...keys, ...raw })), opts)).description;
    expect(desc("s3", {})).toBe(`s3 bucket "usbd" at AWS S3 (region us-east-1)`);
    expect(desc("s3", { endpoint: "http://minio:9000", bucket: "v" })).toBe(`s3 bucket "v" at http://minio:9000`);
    expect(desc("b2", { region: "us-west-004" })).toBe(`b2 bucket "usbd" at https://s3.us-west-004.backblazeb2.com`);
    expect(desc("google", {})).toBe(`google bucket "usbd" at https://storage.googleapis.com`);
    expect(desc("oracle", { region: "us-ashburn-1", namespace: "axaxnpcrorw5" })).toBe(
      `oracle bucket "usbd" at https://axaxnpcrorw5.compat.objectstorage.us-ashburn-1.oraclecloud.com`,
    );
    expect(desc("b2", { region: "eu-central-003", endpoint: "https://b2.proxy.example" })).toBe(`b2 bucket "usbd" at https://b2.proxy.example`);
    expect(configError(() => desc("b2", {})).message).toContain(`"region"`);
    expect(configError(() => desc("oracle", { region: "us-ashburn-1" })).message).toContain(`"namespace"`);
    expect(configError(() => desc("oracle", { namespace: "ns" })).message).toContain(`"region"`);
  });

  test("an explicit non-AWS endpoint and no keys: fails at once, naming the missing keys (no metadata-address lookup)", () => {
    const saved = { id: process.env.AWS_ACCESS_KEY_ID, secret: process.env.AWS_SECRET_ACCESS_KEY };
    delete process.env.AWS_ACCESS_KEY_ID;
    delete process.env.AWS_SECRET_ACCESS_KEY;
    try {
      for (const [kind, raw] of [["s3", { endpoint: "http://127.0.0.1:9" }], ["b2", { region: "us-west-004" }], ["google", {}], ["oracle", { region: "r", namespace: "n" }]] as const) {
        const started = Date.now();
        const error = configError(() => openObjectStore(kind, parseObjectStoreConfig(JSON.stringify(raw)), opts));
        expect(Date.now() - started).toBeLessThan(500);
        expect(error.message).toContain(`"access_key_id" and "secret_key"`);
        expect(error.message).toContain("AWS_ACCESS_KEY_ID");
      }
      // The same keys from the environment are taken, and never shown.
      process.env.AWS_ACCESS_KEY_ID = "ENVKEY";
      process.env.AWS_SECRET_ACCESS_KEY = SECRET;
      const store = track(openObjectStore("s3", parseObjectStoreConfig(JSON.stringify({ endpoint: "http://127.0.0.1:9" })), opts));
      expect(store.description).not.toContain(SECRET);
      // AWS itself keeps the SDK's default chain (instance roles are how EC2 hosts get keys).
      delete process.env.AWS_ACCESS_KEY_ID;
      delete process.env.AWS_SECRET_ACCESS_KEY;
      expect(track(openObjectStore("s3", parseObjectStoreConfig(JSON.stringify({ region: "eu-west-1" })), opts)).description).toContain("AWS S3");
    } finally {
      if (saved.id === undefined) delete process.env.AWS_ACCESS_KEY_ID;
      else process.env.AWS_ACCESS_KEY_ID = saved.id;
      if (saved.secret === undefined) delete process.env.AWS_SECRET_ACCESS_KEY;
      else process.env.AWS_SECRET_ACCESS_KEY = saved.secret;
    }
  });

  test("local: the config's path, else the default directory", () => {
    const withPath = openObjectStore("local", parseObjectStoreConfig(JSON.stringify({ path: path.join(dir, "p") })), opts);
    expect(withPath).toBeInstanceOf(LocalObjectStore);
    expect((withPath as LocalObjectStore).directory).toBe(path.join(dir, "p"));
    expect((openObjectStore("local", parseObjectStoreConfig(undefined), opts) as LocalObjectStore).directory).toBe(opts.localPath);
    expect(configError(() => openObjectStore("local", parseObjectStoreConfig(JSON.stringify({ endpoint: "http://x" })), opts)).message).toContain(`"endpoint"`);
    expect(configError(() => openObjectStore("s3", parseObjectStoreConfig(JSON.stringify({ path: "/x" })), opts)).message).toContain(`"path"`);
    expect(configError(() => openObjectStore("s3", parseObjectStoreConfig(JSON.stringify({ namespace: "ns" })), opts)).message).toContain(`"namespace"`);
  });

  test("azure, swift and sftp: the settings each needs are named; stray ones too; unknown kinds list the kinds", () => {
    const open = (kind: string, raw: object) => track(openObjectStore(kind, parseObjectStoreConfig(JSON.stringify(raw)), opts));
    expect(configError(() => open("azure", {})).message).toContain(`exactly one of "key" (the account key) and "sas"`);
    expect(configError(() => open("azure", { key: SECRET })).message).toContain(`"account"`);
    expect(configError(() => open("azure", { account: "a", key: SECRET, sas: SECRET })).message).toContain("exactly one of");
    expect(configError(() => open("azure", { sas: SECRET })).message).toContain(`"account"`);
    expect(configError(() => open("azure", { account: "a", key: SECRET, bucket: "b" })).message).toContain(`"bucket" in --objstore-cfg is not used by --objstore-kind=azure`);
    expect(open("azure", { account: "acct", key: SECRET }).description).toBe(`azure container "usbd" at https://acct.blob.core.windows.net`);
    expect(open("azure", { sas: `sv=2022&sig=${SECRET}`, endpoint: "https://acct.blob.core.chinacloudapi.cn", container: "vols" }).description).toBe(
      `azure container "vols" at https://acct.blob.core.chinacloudapi.cn`,
    );
    expect(configError(() => open("azure", { account: "a", sas: "x", endpoint: `https://a.blob.core.windows.net/?sig=${SECRET}` })).message).toContain("query string");

    expect(configError(() => open("swift", {})).message).toContain(`"auth_url"`);
    expect(configError(() => open("swift", { auth_url: "http://h/auth/v1.0" })).message).toContain(`"user"`);
    expect(configError(() => open("swift", { auth_url: "http://h/v3", user: "u" })).message).toContain(`"password"`);
    expect(configError(() => open("swift", { auth_url: "http://h/v3", user: "u", password: SECRET })).message).toContain(`"project"`);
    expect(configError(() => open("swift", { auth_url: "http://h/v3", user: "u", key: SECRET, password: SECRET })).message).toContain("give one set");
    expect(open("swift", { auth_url: "http://h:8080/auth/v1.0", user: "test:tester", key: SECRET }).description).toBe(
      `swift container "usbd" at http://h:8080/auth/v1.0 (auth v1, user test:tester)`,
    );
    expect(open("swift", { auth_url: "https://k/v3", user: "u", password: SECRET, project: "p", region: "RegionOne", container: "c" }).description).toContain("auth v3");

    expect(configError(() => open("sftp", {})).message).toContain(`"host"`);
    expect(configError(() => open("sftp", { host: "h", user: "u", path: "/srv" })).message).toContain(`"host_fingerprint"`);
    const fingerprint = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s";
    expect(configError(() => open("sftp", { host: "h", user: "u", path: "/srv", host_fingerprint: "MD5:aa:bb" })).message).toContain("SHA256");
    expect(configError(() => open("sftp", { host: "h", user: "u", path: "/srv", host_fingerprint: fingerprint })).message).toContain(`"private_key_file" and "password"`);
    expect(configError(() => open("sftp", { host: "h", user: "u", path: "/srv", host_fingerprint: fingerprint, private_key_file: path.join(dir, "nope") })).message).toContain("cannot read");
    expect(configError(() => open("sftp", { host: "h", user: "u", path: "/srv", host_fingerprint: fingerprint, password: SECRET, port: 0 })).message).toContain(`"port"`);
    expect(open("sftp", { host: "h", port: 2222, user: "u", path: "/srv/usbd/", host_fingerprint: fingerprint, password: SECRET }).description).toBe("sftp u@h:2222 /srv/usbd");

    expect(configError(() => openObjectStore("ftp", {}, opts)).message).toContain("s3, local, b2, google, oracle, azure, swift, sftp");
  });

  test("the new kinds' secrets are redacted in descriptions of the config", () => {
    const line = describeObjectStoreConfig(parseObjectStoreConfig(JSON.stringify({ account: "a", key: SECRET, sas: SECRET, password: SECRET, passphrase: SECRET, user: "u" })));
    expect(line).not.toContain(SECRET);
    expect(line).toContain("key=<REDACTED>");
    expect(line).toContain("sas=<REDACTED>");
    expect(line).toContain("password=<REDACTED>");
    expect(line).toContain('user="u"');
  });

  test("the harness's inline JSON opens a working store", async () => {
    const store = track(openObjectStore("s3", parseObjectStoreConfig(s3ServerConfigJson(server, "from-json")), opts));
    await store.prepare();
    await store.put("a", bytes(3));
    expect((await store.get("a"))?.body).toEqual(bytes(3));
  });
});

describe("s3 store: conditional create on servers that cannot", () => {
  test("a server that ignores If-None-Match (s3rver unpatched): detected, unsupported, nothing left behind", async () => {
    const ignoring = await startS3Server({ directory: path.join(dir, "s3rver-ignoring"), conditionalPut: false });
    try {
      const store = s3Store("ignoring", { endpoint: ignoring.endpoint });
      await store.prepare();
      const result = await store.createIfAbsent("vol/lease", bytes(10));
      expect(result.outcome).toBe("unsupported");
      if (result.outcome === "unsupported") expect(result.reason).toContain("ignores If-None-Match");
      expect(await store.head("vol/lease")).toBeUndefined();
      expect(await collect(store.list(""))).toEqual([]);
    } finally {
      await ignoring.cleanup();
    }
  });

  test("the probe fails while the server is down, and is asked again once it is back", async () => {
    const store = s3Store("probe-again");
    await store.prepare();
    await server.stop();
    try {
      expect((await failure(store.createIfAbsent("vol/lease", bytes(10)))).kind).toBe("unavailable");
    } finally {
      await server.restart();
    }
    expect((await store.createIfAbsent("vol/lease", bytes(10))).outcome).toBe("created");
  });
});

describe("store error texts: redact", () => {
  test("configured secrets (also URL-encoded), SAS signatures and tokens go; the text stays on one line", () => {
    const secret = "abc+def/ghi==";
    const text = `failed: key ${secret} or ${encodeURIComponent(secret)}\nat https://a.blob.core.windows.net/c/k?sv=1&sig=SIGNATURE123&se=2 X-Auth-Token=tok123 token=t0k`;
    const out = redact(text, [secret, undefined]);
    for (const gone of [secret, encodeURIComponent(secret), "SIGNATURE123", "tok123", "t0k"]) expect(out).not.toContain(gone);
    expect(out).toContain("sig=<REDACTED>");
    expect(out).toContain("sv=1");
    expect(out).not.toContain("\n");
    // Very short "secrets" would blank out ordinary words: they are left alone.
    expect(redact("put failed", ["put"])).toBe("put failed");
  });
});
