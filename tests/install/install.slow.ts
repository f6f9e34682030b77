/**
 * The install paths as a new user meets them, on this machine and a registry on loopback: the packed tarball
 * installed with `npm install -g` on a PATH without bun, `npx usbd-tui` and `bunx usbd-tui` from an empty directory
 * after a publish to a real npm registry (verdaccio, see registry.ts), a plain `node` start that has no bun, and the
 * single binary of `npm run build:binary` serving dedup and objstore-local devices through nbdcopy, and each Worker
 * started inside a binary. Run by
 * scripts/test-install.sh (not part of `bun test`: npm installs and a 110 MB compile take minutes).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { copyFileSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { removeDir, run, runResult, tempDir } from "../clients/helpers.ts";
import { waitFor, watch } from "../helpers/process.ts";
import { buildBinary } from "../../scripts/build-binary.ts";
import { type Registry, publish, publishDependencies, startRegistry } from "./registry.ts";

const ROOT = path.resolve(import.meta.dir, "../..");
const VERSION = (JSON.parse(readFileSync(path.join(ROOT, "package.json"), "utf8")) as { version: string }).version;
const BUN = path.join(ROOT, "node_modules/bun/bin/bun.exe");
/** A PATH with node, npm and the NBD clients but no bun (asserted in beforeAll). */
const NO_BUN_PATH = "/usr/local/bin:/usr/bin:/bin";
const MiB = 1024 * 1024;

let dir: string;
let tarball: string;
let registry: Registry | undefined;

/** npm with its cache, its global prefix and its registry in this run's directory, never the user's. */
function npmEnv(extra: Record<string, string> = {}): Record<string, string> {
  return { PATH: NO_BUN_PATH, HOME: path.join(dir, "home"), npm_config_cache: path.join(dir, "npm-cache"), npm_config_registry: registry!.url, npm_config_update_notifier: "false", npm_config_fund: "false", npm_config_audit: "false", ...extra };
}

beforeAll(async () => {
  dir = tempDir("install");
  mkdirSync(path.join(dir, "home"));
  expect(Bun.which("bun", { PATH: NO_BUN_PATH })).toBeNull();
  const packed = JSON.parse(await run(["npm", "pack", "--json", "--pack-destination", dir], { cwd: ROOT, timeoutMs: 300_000 })) as Array<{ filename: string }>;
  tarball = path.join(dir, packed[0]!.filename);
  registry = await startRegistry(path.join(dir, "registry"));
  const count = await publishDependencies(registry);
  console.log(`install: ${count} dependency tarballs published to ${registry.url}`);
  await publish(registry, tarball);
}, 900_000);

afterAll(async () => {
  await registry?.stop();
  if (dir !== undefined) removeDir(dir);
});

/** Starts `command` serving one device on a fresh Unix socket; resolves once it printed its URI. */
async function serve(command: readonly string[], env: Record<string, string>, cwd: string) {
  const socket = path.join(cwd, "nbd.sock");
  const w = watch([...command, "--headless", `--listen=unix:${socket}`], { cwd, env });
  const uri = await waitFor("a URI: line", w, () => /^\s*URI:\s+(\S+)$/m.exec(w.stdout())?.[1], 60_000).catch((error: unknown) => {
    w.kill();
    throw error;
  });
  return {
    uri,
    async stop(): Promise<void> {
      const code = await w.stop("SIGTERM", 30_000);
      expect({ code, stderr: w.stderr().trim().split("\n").slice(-5) }).toEqual({ code: 0, stderr: expect.anything() });
    },
  };
}

/** Writes 8 MiB of random data through nbdcopy and reads it back the same way. */
async function roundTrip(uri: string, work: string): Promise<void> {
  const data = randomBytes(8 * MiB);
  writeFileSync(path.join(work, "in.bin"), data);
  await run(["nbdcopy", path.join(work, "in.bin"), uri]);
  await run(["nbdcopy", uri, path.join(work, "out.bin")]);
  const back = readFileSync(path.join(work, "out.bin"));
  expect(back.subarray(0, data.length).equals(data)).toBe(true);
}

describe("the packed tarball", () => {
  test("ships the Node launcher, LICENSE, examples/ and the systemd unit", async () => {
    const files = (await run(["tar", "-tzf", tarball])).split("\n");
    for (const file of ["package/bin/usbd-tui.js", "package/bin/usbd-tui.ts", "package/LICENSE", "package/systemd/usbd-tui@.service"]) expect(files).toContain(file);
    expect(files.some((f) => f.startsWith("package/examples/"))).toBe(true);
    expect(files.some((f) => f.startsWith("package/tests/") && !f.startsWith("package/tests/conformance/"))).toBe(false);
  });
});

describe("npm install -g of the tarball, with no bun on the PATH", () => {
  let prefix: string;
  beforeAll(async () => {
    prefix = path.join(dir, "global");
    await run(["npm", "install", "-g", "--prefix", prefix, tarball], { cwd: dir, env: npmEnv(), timeoutMs: 600_000 });
  }, 600_000);

  test("usbd-tui --help works (the launcher runs the bun that npm installed with it)", async () => {
    const r = await runResult([path.join(prefix, "bin/usbd-tui"), "--help"], { cwd: dir, env: { PATH: `${prefix}/bin:${NO_BUN_PATH}` } });
    expect({ code: r.exitCode, stderr: r.stderr }).toEqual({ code: 0, stderr: "" });
    expect(r.stdout).toContain(`usbd-tui ${VERSION}`);
  });

  test("a mem device is served and read with nbdinfo and nbdcopy; SIGTERM through the launcher stops it cleanly", async () => {
    const work = path.join(dir, "global-mem");
    mkdirSync(work);
    const env = { PATH: `${prefix}/bin:${NO_BUN_PATH}`, HOME: path.join(dir, "home") };
    const daemon = await serve(["usbd-tui", "--dev-type=mem", "--store-size=64MiB"], env, work);
    try {
      expect((await run(["nbdinfo", "--size", daemon.uri])).trim()).toBe(String(64 * MiB));
      await roundTrip(daemon.uri, work);
    } finally {
      await daemon.stop();
    }
  }, 120_000);
});

describe("after a publish (to the registry on loopback), from an empty directory", () => {
  test("npx usbd-tui --help", async () => {
    const empty = path.join(dir, "npx-empty");
    mkdirSync(empty);
    const r = await runResult(["npx", "--yes", "usbd-tui", "--help"], { cwd: empty, env: npmEnv(), timeoutMs: 600_000 });
    expect({ code: r.exitCode, stderr: r.stderr.split("\n").filter((l) => l.startsWith("usbd-tui")) }).toEqual({ code: 0, stderr: [] });
    expect(r.stdout).toContain(`usbd-tui ${VERSION}`);
    expect(readdirSync(empty)).toEqual([]);
  }, 600_000);

  test("bunx usbd-tui --help", async () => {
    const empty = path.join(dir, "bunx-empty");
    mkdirSync(empty);
    const bin = path.join(dir, "bunx-bin");
    mkdirSync(bin);
    copyFileSync(BUN, path.join(bin, "bun"));
    await run(["chmod", "+x", path.join(bin, "bun")]);
    const env = { PATH: `${bin}:${NO_BUN_PATH}`, HOME: path.join(dir, "home"), BUN_CONFIG_REGISTRY: registry!.url, NPM_CONFIG_REGISTRY: registry!.url, BUN_INSTALL_CACHE_DIR: path.join(dir, "bun-cache") };
    const r = await runResult([path.join(bin, "bun"), "x", "usbd-tui", "--help"], { cwd: empty, env, timeoutMs: 600_000 });
    expect({ code: r.exitCode, stderr: r.stderr.split("\n").filter((l) => /usbd-tui|error/i.test(l)) }).toEqual({ code: 0, stderr: [] });
    expect(r.stdout).toContain(`usbd-tui ${VERSION}`);
  }, 600_000);
});

describe("a plain node start without bun", () => {
  test("says that bun is needed and how to get it (exit 1, no stack trace)", async () => {
    const lone = path.join(dir, "no-bun", "bin");
    mkdirSync(lone, { recursive: true });
    copyFileSync(path.join(ROOT, "bin/usbd-tui.js"), path.join(lone, "usbd-tui.js"));
    writeFileSync(path.join(lone, "..", "package.json"), JSON.stringify({ name: "usbd-tui", type: "module" }));
    const r = await runResult(["node", path.join(lone, "usbd-tui.js"), "--help"], { cwd: dir, env: { PATH: NO_BUN_PATH } });
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(/^usbd-tui: needs the Bun runtime .*npm install -g bun/);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });
});

describe("the single binary (npm run build:binary)", () => {
  let binary: string;
  beforeAll(async () => {
    await run(["npm", "run", "build:binary"], { cwd: ROOT, timeoutMs: 600_000 });
    // Run from a directory of its own: nothing of the checkout (node_modules) can stand in for what it lacks.
    binary = path.join(dir, "binary", "usbd-tui");
    mkdirSync(path.dirname(binary));
    copyFileSync(path.join(ROOT, "dist/usbd-tui"), binary);
    await run(["chmod", "+x", binary]);
  }, 600_000);

  test("--help", async () => {
    const r = await runResult([binary, "--help"], { cwd: path.dirname(binary), env: { PATH: NO_BUN_PATH } });
    expect({ code: r.exitCode, stderr: r.stderr }).toEqual({ code: 0, stderr: "" });
    expect(r.stdout).toContain(`usbd-tui ${VERSION}`);
  });

  test("serves a dedup device (bun:sqlite, lz4-napi): an nbdcopy round trip, and again after a restart", async () => {
    const work = path.join(dir, "binary-dedup");
    mkdirSync(work);
    const args = [binary, "--dev-type=dedup", `--store-dir=${work}`, "--store-name=vol", "--store-size=64MiB"];
    const env = { PATH: NO_BUN_PATH };
    let daemon = await serve(args, env, work);
    try {
      await roundTrip(daemon.uri, work);
    } finally {
      await daemon.stop();
    }
    daemon = await serve(args, env, work);
    try {
      await run(["nbdcopy", daemon.uri, path.join(work, "again.bin")]);
      expect(readFileSync(path.join(work, "again.bin")).subarray(0, 8 * MiB).equals(readFileSync(path.join(work, "in.bin")))).toBe(true);
    } finally {
      await daemon.stop();
    }
  }, 180_000);

  test("serves an objstore-local device (lz4, AES-GCM, its map in bun:sqlite): an nbdcopy round trip", async () => {
    const work = path.join(dir, "binary-objstore");
    mkdirSync(work);
    const cfg = JSON.stringify({ path: path.join(work, "objects") });
    const daemon = await serve([binary, "--dev-type=objstore", "--objstore-kind=local", `--objstore-cfg=${cfg}`, `--store-dir=${work}`, "--store-name=vol", "--store-size=64MiB"], { PATH: NO_BUN_PATH }, work);
    try {
      await roundTrip(daemon.uri, work);
    } finally {
      await daemon.stop();
    }
    expect(readdirSync(path.join(work, "objects")).length).toBeGreaterThan(0);
  }, 180_000);
  test("every Worker starts inside a binary: the kernel path's blocking call, objstore sealing and dedup hashing", async () => {
    // A probe built like dist/usbd-tui (same worker entry points) that starts each worker; the workers' entry
    // modules once resolved beside the binary's single file, where nothing is, and the kernel path's fsync failed.
    const probe = path.join(dir, "probe", "worker-probe");
    await buildBinary("tests/install/worker-probe.ts", probe);
    const target = path.join(dir, "probe", "fsync-me");
    writeFileSync(target, "x");
    const r = await runResult([probe, target], { cwd: path.dirname(probe), env: { PATH: NO_BUN_PATH } });
    expect({ code: r.exitCode, stderr: r.stderr }).toEqual({ code: 0, stderr: "" });
    expect(JSON.parse(r.stdout)).toEqual({ fsync: 0, sealedOnWorker: 1, inlineReasons: [], hashedOnWorker: 16, hashes: 16 * 32 });
  }, 120_000);
});
