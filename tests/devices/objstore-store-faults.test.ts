// What the real Swift and the Azure emulator (azurite, which the other suites start with --disableTelemetry)
// cannot be made to do on demand, on hand-made loopback HTTP servers: a GET whose
// body is cut off mid-answer (tests/helpers/cutting-server.ts), and a server that is busy or throttling (503, 429).
// The s3 backend's cut-off tests are in objstore-store.test.ts, its throttling is the AWS SDK's classification.
import { afterEach, describe, expect, test } from "bun:test";
import { AzureObjectStore } from "../../src/devices/objstore/store/azure.ts";
import { SwiftObjectStore } from "../../src/devices/objstore/store/swift.ts";
import type { ObjectStore } from "../../src/devices/objstore/store/types.ts";
import { CUT_OBJECT, startCuttingServer, type CuttingServer } from "../helpers/cutting-server.ts";
import { bytes, collect, failure } from "./store-conformance.ts";

const SWIFT_KEY = "hand-made-swift-key-0123";
const AZURE_KEY = Buffer.from("hand-made azure account key, 64 bytes long like a real one.....").toString("base64");

/** Swift's auth v1 answer: a token and the storage URL on the same server. */
function swiftAuth(path: string, url: string): Record<string, string> | undefined {
  return path === "/auth/v1.0" ? { "X-Auth-Token": "AUTH_tk-hand-made", "X-Storage-Url": `${url}/v1/AUTH_test` } : undefined;
}

const swift = (url: string): SwiftObjectStore =>
  new SwiftObjectStore({ auth: { version: 1, url: `${url}/auth/v1.0`, user: "test:tester", key: SWIFT_KEY }, container: "c", timeoutMs: 5000 });
const azure = (url: string): AzureObjectStore =>
  new AzureObjectStore({ account: "devstoreaccount1", key: AZURE_KEY, endpoint: `${url}/devstoreaccount1`, container: "c", tryTimeoutMs: 5000 });

const servers: { close(): void }[] = [];
afterEach(() => {
  for (const s of servers.splice(0)) s.close();
});

async function cutting(cut: number, swiftAuthToo: boolean): Promise<CuttingServer> {
  const server = await startCuttingServer({ cut, empty: swiftAuthToo ? swiftAuth : undefined });
  servers.push(server);
  return server;
}

const backends = [
  { name: "swift", open: swift, swiftAuth: true, description: /swift container "c" at http:\/\/127\.0\.0\.1:\d+\/auth\/v1\.0/ },
  { name: "azure", open: azure, swiftAuth: false, description: /azure container "c" at http:\/\/127\.0\.0\.1:\d+\/devstoreaccount1/ },
] as const;

for (const backend of backends) {
  describe(`${backend.name} store: a GET whose body is cut off mid-answer`, () => {
    test("cut off once, whole or ranged: fetched again, the object comes back whole", async () => {
      const wholeServer = await cutting(1, backend.swiftAuth);
      const whole = await backend.open(wholeServer.url).get("vol/log/1");
      const rangeServer = await cutting(1, backend.swiftAuth);
      const part = await backend.open(rangeServer.url).get("vol/log/1", { offset: 10, length: 20 });
      expect({ whole, wholeGets: wholeServer.gets(), part, partGets: rangeServer.gets() }).toEqual({
        whole: { body: new Uint8Array(CUT_OBJECT), etag: "abc", size: 64 },
        wholeGets: 2,
        part: { body: new Uint8Array(CUT_OBJECT.subarray(10, 30)), etag: "abc", size: 64 },
        partGets: 2,
      });
    });

    test("cut off twice: a retryable error naming the key, not a short object", async () => {
      const server = await cutting(2, backend.swiftAuth);
      const error = await failure(backend.open(server.url).get("vol/log/1"));
      expect(error.retryable).toBe(true);
      expect(error.message).toMatch(/^object store: get "vol\/log\/1" failed on /);
      expect(error.message).toMatch(backend.description);
      expect(error.message).toContain("cut off");
      expect(server.gets()).toBe(2);
    });
  });
}

/** A server that answers every request with `status` (Swift's auth v1 excepted: that works, so the store gets as far as the object). */
function answering(status: number, headers: Record<string, string>, body: string): string {
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    fetch(request): Response {
      const auth = swiftAuth(new URL(request.url).pathname, `http://127.0.0.1:${server.port}`);
      if (auth !== undefined) return new Response(null, { headers: auth });
      return new Response(request.method === "HEAD" ? null : body, { status, headers });
    },
  });
  servers.push({ close: () => server.stop(true) });
  return `http://127.0.0.1:${server.port}`;
}

/** Every call of the store, each to fail the same way. */
const CALLS: Record<string, (store: ObjectStore) => Promise<unknown>> = {
  get: (s) => s.get("a/b"),
  "ranged get": (s) => s.get("a/b", { offset: 1, length: 2 }),
  head: (s) => s.head("a/b"),
  put: (s) => s.put("a/b", bytes(10)),
  create: (s) => s.createIfAbsent("a/b", bytes(10)),
  delete: (s) => s.delete("a/b"),
  list: (s) => collect(s.list("a/")),
};

/** What each call failed with: its kind, whether retryable, and whether the message names the HTTP status. */
async function outcomes(store: ObjectStore, status: number): Promise<Record<string, string>> {
  const settled = await Promise.all(
    Object.entries(CALLS).map(async ([name, call]) => {
      const error = await failure(call(store));
      return [name, `${error.kind}${error.retryable ? " retryable" : ""}${error.message.includes(`HTTP ${status}`) ? "" : " (no status in the message)"}`] as const;
    }),
  );
  return Object.fromEntries(settled);
}

const every = (outcome: string): Record<string, string> => Object.fromEntries(Object.keys(CALLS).map((name) => [name, outcome]));

describe("a busy or throttling server: every call fails retryable (unavailable)", () => {
  const azureError = (code: string): string => `<?xml version="1.0" encoding="utf-8"?><Error><Code>${code}</Code><Message>hand-made ${code}</Message></Error>`;

  test("swift: 503 and 429 are retryable, a 400 is not", async () => {
    expect(await outcomes(swift(answering(503, {}, "<html><h1>Service Unavailable</h1></html>")), 503)).toEqual(every("unavailable retryable"));
    expect(await outcomes(swift(answering(429, {}, "<html><h1>Too Many Requests</h1></html>")), 429)).toEqual(every("unavailable retryable"));
    expect(await outcomes(swift(answering(400, {}, "<html><h1>Bad Request</h1></html>")), 400)).toEqual(every("other"));
  });

  test("azure: 503 ServerBusy and 429 are retryable, a 400 is not", async () => {
    const xml = { "Content-Type": "application/xml" };
    expect(await outcomes(azure(answering(503, { ...xml, "x-ms-error-code": "ServerBusy" }, azureError("ServerBusy"))), 503)).toEqual(every("unavailable retryable"));
    expect(await outcomes(azure(answering(429, xml, azureError("TooManyRequests"))), 429)).toEqual(every("unavailable retryable"));
    expect(await outcomes(azure(answering(400, { ...xml, "x-ms-error-code": "InvalidHeaderValue" }, azureError("InvalidHeaderValue"))), 400)).toEqual(every("other"));
  });
});
