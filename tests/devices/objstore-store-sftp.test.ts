// The sftp backend against Debian's openssh-server on loopback (started once for this file, its own host key, user
// key and config in a temporary directory): the store conformance suite, then the host-key check, atomic puts and
// what a password or a refused key looks like.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { openObjectStore, parseObjectStoreConfig } from "../../src/devices/objstore/store/config.ts";
import { SftpObjectStore, type SftpObjectStoreOptions } from "../../src/devices/objstore/store/sftp.ts";
import { deadPort } from "../helpers/ports.ts";
import { sftpConfig, startSshd, type SshServer } from "../helpers/sshd-server.ts";
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
