/**
 * azurite is only ever started by tests/helpers/azurite-server.ts, always with --disableTelemetry (no traffic off the machine).
 * The objstore device on each remote backend besides s3rver, through the real daemon and real clients: azure on
 * azurite, swift on Debian's Swift (auth v1), s3 on that Swift's s3api (SigV4 checked), sftp on openssh-server;
 * every server on loopback, started once for this file. For each: fio's NBD engine with crc32c verify, then SIGTERM
 * and a daemon with an empty --store-dir that must verify every block from the store alone; the store stopped in
 * the middle of uploads and started again, after which nothing is lost; and wrong credentials, one line and exit 2.
 * No secret may show in anything a daemon prints. The checks are on data and exit codes only, not on the device's
 * object layout or gauges, so they hold for any objstore format.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { ContainerSASPermissions, StorageSharedKeyCredential, generateBlobSASQueryParameters } from "@azure/storage-blob";
import { mkdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { AZURITE_ACCOUNT, AZURITE_KEY, startAzurite, type AzuriteServer } from "../helpers/azurite-server.ts";
import { startSshd, type SshServer } from "../helpers/sshd-server.ts";
import { SWIFT_KEY, SWIFT_USER, startSwift, type SwiftServer } from "../helpers/swift-server.ts";
import { type RandrwVerifyShape, fio, randrwVerifyJob } from "./fio-jobs.ts";
import { type Daemon, removeDir, runResult, skipReason, startDaemon, tempDir } from "./helpers.ts";

setDefaultTimeout(120_000);

const ROOT = resolve(import.meta.dir, "../..");
const CLI = [join(ROOT, "node_modules/.bin/bun"), join(ROOT, "bin/usbd-tui.ts")];
const skip = skipReason("objstore backends suite", ["fio", "swift-proxy-server", "memcached", "sshd"]) ??
  (process.env.USBD_TEST_SERVER === "nbdkit" ? "objstore backends suite: the usbd daemon only" : undefined);
const AES_KEY = Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("hex");

let azurite: AzuriteServer | undefined;
let swift: SwiftServer | undefined;
let sshd: SshServer | undefined;
let work = "";
beforeAll(async () => {
  if (skip !== undefined) return;
  work = tempDir("objstore-backends");
  [azurite, swift, sshd] = await Promise.all([startAzurite({ directory: join(work, "azurite") }), startSwift({ directory: join(work, "swift") }), startSshd({ directory: join(work, "sshd") })]);
}, 120_000);
afterAll(async () => {
  await Promise.all([azurite?.cleanup(), swift?.cleanup(), sshd?.cleanup()]);
  if (work !== "") removeDir(work);
}, 60_000);

interface BackendCase {
  readonly kind: string;
  readonly label: string;
  /** The --objstore-cfg of volume `name`'s container (bucket, directory); `wrong` spoils the credentials. */
  config(name: string, wrong?: boolean): object;
  /** Strings no daemon output may contain. */
  secrets(): string[];
  readonly server: () => { stop(): Promise<void>; restart(): Promise<void> };
}

const WRONG = "wrong-secret-0123456789";

const cases: BackendCase[] = [
  {
    kind: "azure",
    label: "azure on azurite",
    config: (name, wrong) => ({ account: AZURITE_ACCOUNT, key: wrong ? Buffer.from(WRONG.repeat(3)).toString("base64") : AZURITE_KEY, endpoint: azurite!.endpoint, container: name }),
    secrets: () => [AZURITE_KEY],
    server: () => azurite!,
  },
  {
    kind: "swift",
    label: "swift (auth v1) on Debian's Swift",
    config: (name, wrong) => ({ auth_url: swift!.authUrl, user: SWIFT_USER, key: wrong ? WRONG : SWIFT_KEY, container: name }),
    secrets: () => [SWIFT_KEY],
    server: () => swift!,
  },
  {
    kind: "s3",
    label: "s3 on Swift's s3api (SigV4 checked)",
    config: (name, wrong) => ({ access_key_id: SWIFT_USER, secret_key: wrong ? WRONG : SWIFT_KEY, endpoint: swift!.url, region: "us-east-1", bucket: `s3-${name}` }),
    secrets: () => [SWIFT_KEY],
    server: () => swift!,
  },
  {
    kind: "sftp",
    label: "sftp on openssh-server",
    config: (name, wrong) => ({
      host: sshd!.host,
      port: sshd!.port,
      user: sshd!.user,
      ...(wrong ? { password: WRONG } : { private_key_file: sshd!.keyFile }),
      path: join(sshd!.dataDir, name),
      host_fingerprint: sshd!.fingerprint,
    }),
    secrets: () => [readFileSync(sshd!.keyFile, "utf8").split("\n")[1]!],
    server: () => sshd!,
  },
];

function daemonOn(c: BackendCase, storeDir: string, volume: string, opts: { create: boolean; flushEvery?: number }) {
  return startDaemon({
    devType: "objstore",
    size: opts.create ? "128MiB" : "",
    storeDir,
    storeName: volume,
    // --json with stats lines: the store's description and errors show there too, and must hold no secret.
    statsIntervalS: 1,
    extraArgs: [
      `--objstore-kind=${c.kind}`,
      "--objstore-cfg",
      JSON.stringify(c.config(volume)),
      "--objstore-aeskey",
      `key:${AES_KEY}`,
      `--objstore-flushevery=${opts.flushEvery ?? 1}`,
      ...(opts.create ? ["--objstore-objsize=1MiB"] : []),
    ],
  });
}

function expectNoSecrets(c: BackendCase, printed: string): void {
  for (const secret of [...c.secrets(), WRONG, AES_KEY]) expect(printed.includes(secret)).toBe(false);
}

const RANDRW: RandrwVerifyShape = { jobs: 2, regionMiB: 16, loops: 2, extra: ["buffer_compress_percentage=50"] };
const verifyOnly = (shape: RandrwVerifyShape): RandrwVerifyShape => ({ ...shape, extra: [...(shape.extra ?? []), "verify_only=1"] });
/** [64, 112) MiB written sequentially at 16 MB/s, so that uploads are under way when the store goes down. */
const OUTAGE: RandrwVerifyShape = { jobs: 1, regionMiB: 48, loops: 1, extra: ["offset=64m", "rw=write", "bs=256k", "rate=16m"] };

for (const c of cases) {
  describe.skipIf(skip !== undefined)(`objstore volume in ${c.label}`, () => {
    let daemon: Daemon | undefined;
    afterAll(() => daemon?.kill());

    test("fio randrw with crc32c verify; after SIGTERM a daemon with an empty --store-dir verifies every block from the store", async () => {
      const volume = `fio-${c.kind}`;
      for (const d of ["cache", "cold"]) mkdirSync(join(work, volume, d), { recursive: true });
      daemon = await daemonOn(c, join(work, volume, "cache"), volume, { create: true });
      const jobs = await fio(join(work, volume), "randrw", randrwVerifyJob(daemon.uri, RANDRW));
      expect(jobs.map((j) => j.error)).toEqual([0, 0]);
      const printed = await daemon.stop();
      expectNoSecrets(c, printed + daemon.stderr());
      daemon = await daemonOn(c, join(work, volume, "cold"), volume, { create: false });
      const verified = await fio(join(work, volume), "verify", randrwVerifyJob(daemon.uri, verifyOnly(RANDRW)));
      expect(verified.map((j) => j.error)).toEqual([0, 0]);
      expectNoSecrets(c, (await daemon.stop()) + daemon.stderr());
      daemon = undefined;
    });

    test("the store stopped in the middle of uploads and started again: SIGTERM exits 0 and a cold daemon verifies every block", async () => {
      const volume = `outage-${c.kind}`;
      for (const d of ["cache", "cold"]) mkdirSync(join(work, volume, d), { recursive: true });
      daemon = await daemonOn(c, join(work, volume, "cache"), volume, { create: true });
      const writing = fio(join(work, volume), "write", randrwVerifyJob(daemon.uri, { ...OUTAGE, extra: [...OUTAGE.extra!, "do_verify=0"] }));
      await Bun.sleep(1500);
      await c.server().stop();
      try {
        const jobs = await writing; // the cache takes the writes while the store is away
        expect(jobs.map((j) => j.error)).toEqual([0]);
        await Bun.sleep(1500);
      } finally {
        await c.server().restart();
      }
      expectNoSecrets(c, (await daemon.stop()) + daemon.stderr());
      daemon = await daemonOn(c, join(work, volume, "cold"), volume, { create: false });
      const verified = await fio(join(work, volume), "verify", randrwVerifyJob(daemon.uri, verifyOnly({ ...OUTAGE, extra: ["offset=64m", "rw=write", "bs=256k"] })));
      expect(verified.map((j) => j.error)).toEqual([0]);
      await daemon.stop();
      daemon = undefined;
    });

    test("wrong credentials: one line naming what to check, exit 2, no secret", async () => {
      const dir = join(work, `wrong-${c.kind}`);
      mkdirSync(dir, { recursive: true });
      const cfg = JSON.stringify(c.config(`wrong-${c.kind}`, true));
      const cmd = [...CLI, "--headless", "--dev-type=objstore", `--store-dir=${dir}`, "--store-size=64MiB", "--listen", `unix:${join(dir, "s.sock")}`, `--objstore-kind=${c.kind}`, "--objstore-cfg", cfg];
      const r = await runResult(cmd, { timeoutMs: 30_000 });
      expect(r.exitCode).toBe(2);
      expect(r.stderr.trim().split("\n").length).toBe(1);
      expect(r.stderr).toMatch(/check|refused/);
      expectNoSecrets(c, r.stdout + r.stderr);
    });
  });
}

describe.skipIf(skip !== undefined)("objstore volume in azure on azurite, with a SAS token", () => {
  // A SAS signed with another key: azurite refuses it. Its signature must show nowhere, with or without --json.
  test("a refused SAS token: exit 2, and its signature in no output", async () => {
    const wrongKey = Buffer.from(WRONG.repeat(3)).toString("base64");
    const sas = generateBlobSASQueryParameters(
      { containerName: "wrong-sas", permissions: ContainerSASPermissions.parse("racwdl"), expiresOn: new Date(Date.now() + 3600_000) },
      new StorageSharedKeyCredential(AZURITE_ACCOUNT, wrongKey),
    ).toString();
    const signature = new URLSearchParams(sas).get("sig")!;
    const dir = join(work, "wrong-sas");
    mkdirSync(dir, { recursive: true });
    const cfg = JSON.stringify({ sas, endpoint: azurite!.endpoint, container: "wrong-sas" });
    const cmd = [...CLI, "--headless", "--dev-type=objstore", `--store-dir=${dir}`, "--store-size=64MiB", "--listen", `unix:${join(dir, "s.sock")}`, "--objstore-kind=azure", "--objstore-cfg", cfg];
    for (const json of [[], ["--json", "--stats-interval", "1"]]) {
      const r = await runResult([...cmd, ...json], { timeoutMs: 30_000 });
      expect(r.exitCode).toBe(2);
      const printed = r.stdout + r.stderr;
      for (const secret of [signature, encodeURIComponent(signature), wrongKey, AZURITE_KEY]) expect(printed.includes(secret)).toBe(false);
    }
  });
});
