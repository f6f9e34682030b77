// The sftp backend against Debian's openssh-server on loopback (started once for this file, its own host key, user
// key and config in a temporary directory): the store conformance suite, then the host-key check, atomic puts,
// what a password or a refused key looks like, and reads cut off or short (through a proxy).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { openObjectStore, parseObjectStoreConfig } from "../../src/devices/objstore/store/config.ts";
import { SftpObjectStore, type SftpObjectStoreOptions } from "../../src/devices/objstore/store/sftp.ts";
import { deadPort } from "../helpers/ports.ts";
import { sftpConfig, startSshd, type SshServer } from "../helpers/sshd-server.ts";
import { startTcpProxy, type ProxyVerdict } from "../helpers/tcp-proxy.ts";
import { bytes, collect, failure, storeConformance } from "./store-conformance.ts";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "usbd-store-sftp-"));
let server: SshServer;
let dead: number;
beforeAll(async () => {
  server = await startSshd({ directory: path.join(dir, "sshd") });
  dead = await deadPort();
});
afterAll(async () => {
  await server?.cleanup();
  fs.rmSync(dir, { recursive: true, force: true });
}, 30_000);

function store(name: string, more: Partial<SftpObjectStoreOptions> = {}): SftpObjectStore {
  return new SftpObjectStore({
    host: server.host,
    port: server.port,
    user: server.user,
    path: path.join(server.dataDir, name),
    hostFingerprint: server.fingerprint,
    privateKey: fs.readFileSync(server.keyFile),
    privateKeyFile: server.keyFile,
    ...more,
  });
}

/** Another ed25519 key, not in authorized_keys. */
function strangerKey(): Buffer {
  const file = path.join(dir, `stranger-${Date.now()}`);
  Bun.spawnSync(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", file]);
  return fs.readFileSync(file);
}

storeConformance({
  name: "sftp on openssh-server",
  open: (name) => openObjectStore("sftp", sftpConfig(server, name), { localPath: "/x" }),
  exists: async (name) => fs.existsSync(path.join(server.dataDir, name)),
  conditionalCreate: "atomic",
  fileAndDirectoryKeys: false,
  wrongCredentials: (name) => store(name, { privateKey: strangerKey() }),
  unreachable: () => store("contract", { port: dead }),
});

describe("sftp store: host keys, atomic puts, passwords", () => {
  test("an unknown host key is refused, naming the key the server showed", async () => {
    const other = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s";
    const error = await failure(store("hostkey", { hostFingerprint: other }).prepare());
    expect(error.kind).toBe("unauthorised");
    expect(error.message).toContain(server.fingerprint);
    expect(error.message).toContain(other);
    expect(fs.existsSync(path.join(server.dataDir, "hostkey"))).toBe(false);
  });

  test("no fingerprint configured: refused before connecting, with how to find it", () => {
    const raw = { host: server.host, port: server.port, user: server.user, private_key_file: server.keyFile, path: "/tmp/x" };
    expect(() => openObjectStore("sftp", parseObjectStoreConfig(JSON.stringify(raw)), { localPath: "/x" })).toThrow(/host_fingerprint.*ssh-keyscan/);
  });

  test("puts go through a temporary name and a rename: files are whole, no temporary file stays", async () => {
    const s = store("atomic");
    await s.prepare();
    const big = bytes(5 << 20, 3);
    await Promise.all([s.put("v/obj", big), s.put("v/obj", bytes(5 << 20, 4))]);
    const got = (await s.get("v/obj"))!.body;
    expect(Buffer.from(got).equals(Buffer.from(big)) || Buffer.from(got).equals(Buffer.from(bytes(5 << 20, 4)))).toBe(true);
    expect(fs.readdirSync(path.join(server.dataDir, "atomic", "v"))).toEqual(["obj"]);
    expect(fs.statSync(path.join(server.dataDir, "atomic", "v", "obj")).mode & 0o777).toBe(0o600);
    s.close();
  });

  test("a wrong password: unauthorised, and the password is in no message", async () => {
    const password = "wrong-Passw0rd-for-root";
    const s = store("password", { privateKey: undefined, privateKeyFile: undefined, password });
    const error = await failure(s.prepare());
    expect(error.kind).toBe("unauthorised");
    expect(error.message).toContain("the password");
    expect(error.message).not.toContain(password);
  });

  test("the server restarts: calls fail unavailable meanwhile, then reconnect by themselves", async () => {
    const s = store("restart");
    await s.prepare();
    await s.put("a", bytes(10));
    await server.stop();
    try {
      expect((await failure(s.get("a"))).kind).toBe("unavailable");
    } finally {
      await server.restart();
    }
    expect((await s.get("a"))?.body).toEqual(bytes(10));
    expect((await collect(s.list(""))).map((o) => o.key)).toEqual(["a"]);
    s.close();
  });
});

// A proxy between the store and sshd (tests/helpers/tcp-proxy.ts) drops the connection, or holds the server's answers
// while the test truncates the file, after so many bytes: sshd itself cannot be made to do either mid-read.
describe("sftp store: a read that does not arrive whole is read once more, never returned short", () => {
  const MiB = 1 << 20;

  /** Object `<name>/obj` of `size` bytes written straight into the server's directory, and a proxy that follows `plan`. */
  async function objectBehind(name: string, size: number, plan: (connection: number, fromServer: number) => ProxyVerdict) {
    const file = path.join(server.dataDir, name, "obj");
    fs.mkdirSync(path.dirname(file), { recursive: true });
    const data = bytes(size, 5);
    fs.writeFileSync(file, data);
    const proxy = await startTcpProxy({ host: server.host, port: server.port }, plan);
    return { data, proxy, open: () => store(name, { port: proxy.port }) };
  }

  const same = (a: Uint8Array | undefined, b: Uint8Array): boolean => a !== undefined && Buffer.from(a).equals(Buffer.from(b));

  test("the connection dropped mid-read: reconnects and reads the object, and a range of it, whole", async () => {
    // Every odd connection is cut once 512 KiB have come: the first read of each get, not the one after it.
    const t = await objectBehind("cut-once", 4 * MiB, (connection, n) => (connection % 2 === 1 && n > 512 << 10 ? "cut" : "pass"));
    try {
      const first = t.open();
      const whole = await first.get("obj");
      first.close();
      const second = t.open();
      const range = { offset: MiB + 3, length: 2 * MiB };
      const part = await second.get("obj", range);
      second.close();
      expect({ whole: same(whole?.body, t.data), part: same(part?.body, t.data.subarray(range.offset, range.offset + range.length)), sizes: [whole?.size, part?.size] })
        .toEqual({ whole: true, part: true, sizes: [4 * MiB, 4 * MiB] });
      expect(t.proxy.connections()).toBe(4);
    } finally {
      t.proxy.close();
    }
  });

  test("dropped again on the second read: one retryable error naming the key, after two connections", async () => {
    const t = await objectBehind("cut-twice", 4 * MiB, (_, n) => (n > 512 << 10 ? "cut" : "pass"));
    try {
      const s = t.open();
      const error = await failure(s.get("obj"));
      s.close();
      expect(error.retryable).toBe(true);
      expect(error.message).toMatch(/^object store: get "obj" failed on sftp .*; is the server reachable\?$/);
      expect(t.proxy.connections()).toBe(2);
    } finally {
      t.proxy.close();
    }
  });

  /**
   * Holds the server's answers once `atMiB[i]` MiB have come and truncates the file to `toMiB[i]` meanwhile. Reads are
   * issued only as answers arrive (16 of 255 KiB in flight), so no read past about 4 MiB beyond what has come is out
   * yet: the reads past the new end get end-of-file, as from a file changed in place on the server.
   */
  function truncating(file: string, atMiB: number[], toMiB: number[]) {
    let step = 0;
    return (_: number, n: number): ProxyVerdict => {
      if (step >= atMiB.length || n < atMiB[step]! * MiB) return "pass";
      const size = toMiB[step++]! * MiB;
      return Promise.resolve().then(() => fs.truncateSync(file, size));
    };
  }

  test("the file ends before the size it had when opened: read once more, whole as it is now (not a short body)", async () => {
    const t = await objectBehind("short-once", 16 * MiB, truncating(path.join(server.dataDir, "short-once", "obj"), [1], [8]));
    try {
      const s = t.open();
      const got = await s.get("obj");
      s.close();
      expect({ size: got?.size, length: got?.body.byteLength, same: same(got?.body, t.data.subarray(0, 8 * MiB)) }).toEqual({ size: 8 * MiB, length: 8 * MiB, same: true });
      expect(t.proxy.connections()).toBe(1); // a short read keeps the connection
    } finally {
      t.proxy.close();
    }
  });

  test("short on the second read too: one retryable error saying so", async () => {
    // The first read has about 8 MiB when it fails; the second is held at 10 MiB in all, about 2 MiB into its 8.
    const t = await objectBehind("short-twice", 16 * MiB, truncating(path.join(server.dataDir, "short-twice", "obj"), [1, 10], [8, 7]));
    try {
      const s = t.open();
      const error = await failure(s.get("obj"));
      s.close();
      expect(error.retryable).toBe(true);
      expect(error.message).toMatch(/^object store: get "obj" failed on sftp .*: the file ended at byte \d+, before the 8388608 bytes it had when opened .*; read twice, short both times$/);
    } finally {
      t.proxy.close();
    }
  });
});
