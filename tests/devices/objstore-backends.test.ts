// azurite is only ever started by tests/helpers/azurite-server.ts, always with --disableTelemetry (no traffic off the machine).
// The device conformance suite on an objstore volume in each remote store besides s3rver: azure on azurite, swift
// and s3 on Debian's Swift (auth v1 and its s3api), sftp on openssh-server, all on loopback and started once for this
// file. Every reopen is cold: a new, empty cache directory with only the key, so what it reads comes from the store.
import { afterAll, beforeAll } from "bun:test";
import fs from "node:fs";
import path from "node:path";
import { MiB, runConformance } from "../conformance/index.ts";
import { azuriteConfigJson, startAzurite, type AzuriteServer } from "../helpers/azurite-server.ts";
import { sftpConfig, startSshd, type SshServer } from "../helpers/sshd-server.ts";
import { SWIFT_KEY, SWIFT_USER, startSwift, type SwiftServer } from "../helpers/swift-server.ts";
import { objstoreTraits, openObjstoreDevice, tempDir } from "./objstore-helpers.ts";

const dir = tempDir("objstore-backends");
let azurite: AzuriteServer | undefined;
let swift: SwiftServer | undefined;
let sshd: SshServer | undefined;
beforeAll(async () => {
  [azurite, swift, sshd] = await Promise.all([startAzurite({ directory: path.join(dir, "azurite") }), startSwift({ directory: path.join(dir, "swift") }), startSshd({ directory: path.join(dir, "sshd") })]);
}, 120_000);
afterAll(async () => {
  await Promise.all([azurite?.cleanup(), swift?.cleanup(), sshd?.cleanup()]);
  fs.rmSync(dir, { recursive: true, force: true });
}, 60_000);

const AES_KEY = `key:${Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("hex")}`;

const backends: { readonly kind: string; readonly label: string; config(volume: string): string }[] = [
  { kind: "azure", label: "azure on azurite", config: (volume) => azuriteConfigJson(azurite!, volume) },
  { kind: "swift", label: "swift on Debian's Swift", config: (volume) => JSON.stringify({ auth_url: swift!.authUrl, user: SWIFT_USER, key: SWIFT_KEY, container: volume }) },
  {
    kind: "s3",
    label: "s3 on Swift's s3api",
    config: (volume) => JSON.stringify({ access_key_id: SWIFT_USER, secret_key: SWIFT_KEY, endpoint: swift!.url, region: "us-east-1", bucket: `s3-${volume}` }),
  },
  {
    kind: "sftp",
    label: "sftp on openssh-server",
    config: (volume) => {
      const c = sftpConfig(sshd!, volume);
      return JSON.stringify({ host: c.host, port: c.port, user: c.user, private_key_file: c.privateKeyFile, path: c.path, host_fingerprint: c.hostFingerprint });
    },
  },
];

const traits = await objstoreTraits();
let count = 0;
for (const b of backends) {
  let volume = "";
  const cacheDirs: string[] = [];
  const cacheDir = (): string => {
    const d = path.join(dir, `cache-${count++}`);
    fs.mkdirSync(d);
    cacheDirs.push(d);
    return d;
  };
  await runConformance(`objstore in ${b.label} (cold reopen)`, {
    traits,
    create() {
      volume = `conf-${b.kind}-${count}`;
      return openObjstoreDevice({ storeDir: cacheDir(), storeName: volume, size: 16 * MiB, kind: b.kind, config: b.config(volume), aesKey: AES_KEY, objectSize: 256 * 1024, flushMode: "remote" });
    },
    reopen: () => openObjstoreDevice({ storeDir: cacheDir(), storeName: volume, kind: b.kind, config: b.config(volume), aesKey: AES_KEY, flushMode: "remote" }),
    cleanup() {
      for (const d of cacheDirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
    },
  });
}
