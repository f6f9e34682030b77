// Debian's OpenStack Swift on loopback (started once for this file): the store conformance suite for the swift
// backend (auth v1, tempauth) and for the s3 backend through Swift's s3api middleware, a stricter S3 than s3rver
// (it checks SigV4 signatures, and has no conditional create); then Keystone v3 and token renewal.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { openObjectStore } from "../../src/devices/objstore/store/config.ts";
import { S3ObjectStore } from "../../src/devices/objstore/store/s3.ts";
import { SwiftObjectStore } from "../../src/devices/objstore/store/swift.ts";
import { deadPort } from "../helpers/ports.ts";
import { SWIFT_KEY, SWIFT_USER, startSwift, swiftConfig, swiftS3Config, type SwiftServer } from "../helpers/swift-server.ts";
import { bytes, collect, failure, storeConformance } from "./store-conformance.ts";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "usbd-store-swift-"));
let server: SwiftServer;
let dead: string;
beforeAll(async () => {
  server = await startSwift({ directory: path.join(dir, "swift") });
  dead = `http://127.0.0.1:${await deadPort()}`;
}, 90_000);
afterAll(async () => {
  await server?.cleanup();
  fs.rmSync(dir, { recursive: true, force: true });
}, 60_000);

const WRONG = "not-the-key-0123";
const v1 = (container: string, more: { key?: string; authUrl?: string; listPageSize?: number } = {}): SwiftObjectStore =>
  new SwiftObjectStore({ auth: { version: 1, url: more.authUrl ?? server.authUrl, user: SWIFT_USER, key: more.key ?? SWIFT_KEY }, container, listPageSize: more.listPageSize });

/** What the proxy itself says about a container (with a fresh auth v1 token). */
async function containerExists(name: string): Promise<boolean> {
  const auth = await fetch(server.authUrl, { headers: { "X-Auth-User": SWIFT_USER, "X-Auth-Key": SWIFT_KEY } });
  const response = await fetch(`${auth.headers.get("x-storage-url")}/${name}`, { method: "HEAD", headers: { "X-Auth-Token": auth.headers.get("x-auth-token")! } });
  return response.ok;
}

storeConformance(
  {
    name: "swift (auth v1)",
    open: (name, options) =>
      options?.listPageSize === undefined ? openObjectStore("swift", swiftConfig(server, name), { localPath: "/x" }) : v1(name, { listPageSize: options.listPageSize }),
    exists: containerExists,
    // Swift checks If-None-Match: * when the upload starts: 8 overlapping creates all succeeded here.
    conditionalCreate: "sequential",
    fileAndDirectoryKeys: true,
    wrongCredentials: (name) => v1(name, { key: WRONG }),
    unreachable: () => v1("contract", { authUrl: `${dead}/auth/v1.0` }),
    missingBucketIsError: true,
  },
  [WRONG, SWIFT_KEY],
);

const s3 = (bucket: string, more: { secret?: string; endpoint?: string; listPageSize?: number } = {}): S3ObjectStore =>
  new S3ObjectStore({
    bucket,
    endpoint: more.endpoint ?? server.url,
    region: "us-east-1",
    pathStyle: true,
    credentials: { accessKeyId: SWIFT_USER, secretAccessKey: more.secret ?? SWIFT_KEY },
    listPageSize: more.listPageSize,
  });

storeConformance(
  {
    name: "s3 on Swift's s3api",
    open: (name, options) =>
      options?.listPageSize === undefined ? openObjectStore("s3", swiftS3Config(server, `s3-${name}`), { localPath: "/x" }) : s3(`s3-${name}`, { listPageSize: options.listPageSize }),
    exists: (name) => containerExists(`s3-${name}`),
    // s3api answers If-None-Match: * on PUT with 501 NotImplemented.
    conditionalCreate: "unsupported",
    fileAndDirectoryKeys: true,
    wrongCredentials: (name) => s3(`s3-${name}`, { secret: WRONG }),
    unreachable: () => s3("s3-contract", { endpoint: dead }),
    missingBucketIsError: true,
  },
  [WRONG, SWIFT_KEY],
);

describe("s3 on Swift's s3api: signatures are checked", () => {
  test("a wrong secret key is refused with SignatureDoesNotMatch (which s3rver could never show)", async () => {
    const error = await failure(s3("s3-contract", { secret: WRONG }).get("whole/a"));
    expect(error.kind).toBe("unauthorised");
    expect(error.message).toContain("SignatureDoesNotMatch");
    expect(error.message).toContain("access_key_id/secret_key");
    expect(error.message).not.toContain(WRONG);
  });
});

describe("the body's MD5: the caller's digest is sent, and a body that does not match it is refused", () => {
  // Swift checks ETag and s3api checks Content-MD5 (s3rver checks neither), and s3api also checks the signature of a
  // request whose payload went unsigned: the digest is what binds the body.
  const md5 = (b: Uint8Array) => new Uint8Array(createHash("md5").update(b).digest());
  for (const [name, open] of [
    ["swift", () => v1("digest")],
    ["s3 on Swift's s3api", () => s3("s3-digest")],
  ] as const) {
    test(name, async () => {
      const store = open();
      await store.prepare();
      const body = bytes(3000, 5);
      expect(store.putDigest).toBe("md5");
      await store.put("vol/a", body, md5(body));
      expect((await store.get("vol/a"))?.body).toEqual(body);
      const error = await failure(store.put("vol/b", body, md5(bytes(3000, 6))));
      expect(error.message).toMatch(/^object store: put "vol\/b" failed on /);
      expect(error.message).not.toContain("\n");
      expect(await store.get("vol/b")).toBeUndefined();
    });
  }
});

/**
 * A stand-in for Keystone's token API, on loopback: Debian's Keystone needs a database, a WSGI server and a
 * bootstrap, too heavy to start per test file. It checks the v3 password request the backend sends, then hands
 * out a real tempauth token of the Swift server above and a catalog that points at its real storage URL, so every
 * storage request still goes to the real Swift. What it cannot show: Keystone's own token validation in Swift.
 */
function fakeKeystone(expect_: { user: string; password: string; project: string; domain: string }): { url: string; requests: number; stop(): void } {
  const state = { requests: 0 };
  const listener: ReturnType<typeof Bun.serve> = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(request): Promise<Response> {
      const url = new URL(request.url);
      if (request.method !== "POST" || url.pathname !== "/v3/auth/tokens") return new Response("not found", { status: 404 });
      state.requests++;
      const body = (await request.json()) as {
        auth: { identity: { methods: string[]; password: { user: { name: string; password: string; domain: { name: string } } } }; scope: { project: { name: string; domain: { name: string } } } };
      };
      const user = body.auth.identity.password.user;
      const project = body.auth.scope.project;
      const ok = body.auth.identity.methods[0] === "password" && user.name === expect_.user && user.password === expect_.password &&
        user.domain.name === expect_.domain && project.name === expect_.project && project.domain.name === expect_.domain;
      if (!ok) return Response.json({ error: { code: 401, title: "Unauthorized", message: "The request you have made requires authentication." } }, { status: 401 });
      const auth = await fetch(server.authUrl, { headers: { "X-Auth-User": SWIFT_USER, "X-Auth-Key": SWIFT_KEY } });
      const catalog: object[] = [
        { type: "identity", endpoints: [{ interface: "public", region: "RegionOne", url: `http://127.0.0.1:${listener.port}/v3` }] },
        {
          type: "object-store",
          endpoints: [
            { interface: "internal", region: "RegionOne", url: "http://127.0.0.1:9/internal-must-not-be-used" },
            { interface: "public", region: "RegionTwo", url: "http://127.0.0.1:9/other-region" },
            { interface: "public", region: "RegionOne", url: auth.headers.get("x-storage-url") },
          ],
        },
      ];
      return Response.json({ token: { catalog } }, { status: 201, headers: { "X-Subject-Token": auth.headers.get("x-auth-token")! } });
    },
  });
  return {
    url: `http://127.0.0.1:${listener.port}/v3`,
    get requests() {
      return state.requests;
    },
    stop: () => listener.stop(true),
  };
}

describe("swift: Keystone v3 and tokens", () => {
  const who = { user: "demo", password: "k3y-Stone-Secret", project: "vols", domain: "Default" };

  test("password auth scoped to a project, the public object-store endpoint of the region from the catalog", async () => {
    const keystone = fakeKeystone(who);
    try {
      const config = { authUrl: keystone.url, user: who.user, password: who.password, project: who.project, region: "RegionOne", container: "keystone" };
      const store = openObjectStore("swift", config, { localPath: "/x" });
      await store.prepare();
      await store.put("a/b", bytes(1000));
      expect((await store.get("a/b", { offset: 10, length: 10 }))?.body).toEqual(bytes(1000).subarray(10, 20));
      expect(await containerExists("keystone")).toBe(true);
      expect(keystone.requests).toBe(1);
      // Without a region the first public endpoint is RegionTwo's, which is not there: "region" picks the right one.
      const wrongRegion = openObjectStore("swift", { ...config, region: "RegionThree" }, { localPath: "/x" });
      const error = await failure(wrongRegion.prepare());
      expect(error.message).toContain("no public object-store endpoint in region RegionThree");
      expect(error.message).toContain("RegionOne, RegionTwo");
      // storage_url overrides the catalog.
      const direct = openObjectStore("swift", { ...config, region: "RegionThree", storageUrl: `${server.url}/v1/AUTH_test` }, { localPath: "/x" });
      expect((await direct.get("a/b"))?.body).toEqual(bytes(1000));
    } finally {
      keystone.stop();
    }
  });

  test("a wrong password: unauthorised, one line, without the password", async () => {
    const keystone = fakeKeystone(who);
    try {
      const store = openObjectStore("swift", { authUrl: keystone.url, user: who.user, password: "wrong-password-123", project: who.project }, { localPath: "/x" });
      const error = await failure(store.put("a/b", bytes(3)));
      expect(error.kind).toBe("unauthorised");
      expect(error.message).toContain("Keystone");
      expect(error.message).not.toContain("wrong-password-123");
      expect(error.message).not.toContain("\n");
    } finally {
      keystone.stop();
    }
  });

  test("a token the server forgot (restart): authenticates again and carries on", async () => {
    const store = v1("renew");
    await store.prepare();
    await store.put("a", bytes(10));
    await server.restart(); // memcached restarts too: tempauth's tokens are gone
    expect((await store.get("a"))?.body).toEqual(bytes(10));
    expect((await collect(store.list(""))).map((o) => o.key)).toEqual(["a"]);
  }, 60_000);
});
