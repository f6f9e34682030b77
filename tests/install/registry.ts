/**
 * A real npm registry on loopback for the install tests: verdaccio (installed by scripts/test-install.sh into
 * .cache/verdaccio), with its storage in a temporary directory and no uplinks, so it never asks anything outward.
 * The package's own dependencies are published into it first, from their original tarballs (fetched once from the
 * machine's normal registry by `npm pack` into .cache/npm-mirror), so `npx usbd-tui` and `bunx usbd-tui` resolve
 * everything from it exactly as they would from the public registry after a publish.
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { createHash } from "node:crypto";
import path from "node:path";
import type { Subprocess } from "bun";
import { run } from "../clients/helpers.ts";

const ROOT = path.resolve(import.meta.dir, "../..");
const VERDACCIO = path.join(ROOT, ".cache/verdaccio/node_modules/.bin/verdaccio");
const MIRROR = path.join(ROOT, ".cache/npm-mirror");

export interface Registry {
  readonly url: string;
  stop(): Promise<void>;
}

/** Starts verdaccio on a free loopback port with storage under `dir`; waits until it answers. */
export async function startRegistry(dir: string): Promise<Registry> {
  if (!existsSync(VERDACCIO)) throw new Error(`${VERDACCIO} is missing: run scripts/test-install.sh, which installs verdaccio`);
  const port = await freePort();
  const config = path.join(dir, "verdaccio.yaml");
  mkdirSync(path.join(dir, "storage"), { recursive: true });
  writeFileSync(
    config,
    [
      `storage: ${path.join(dir, "storage")}`,
      "auth:",
      "  htpasswd:",
      `    file: ${path.join(dir, "htpasswd")}`,
      "    max_users: -1",
      // No uplinks section (and no proxy: on any package): nothing is ever fetched from anywhere but this registry.
      "packages:",
      "  '**':",
      "    access: $all",
      "    publish: $anonymous",
      "    unpublish: $anonymous",
      "max_body_size: 1gb",
      "publish:",
      "  allow_offline: true",
      "log: { type: stdout, format: pretty, level: warn }",
      "",
    ].join("\n"),
  );
  const proc: Subprocess = Bun.spawn([VERDACCIO, "--config", config, "--listen", `127.0.0.1:${port}`], { stdout: "pipe", stderr: "pipe", env: { ...process.env, VERDACCIO_STORAGE_PATH: path.join(dir, "storage") } });
  const url = `http://127.0.0.1:${port}/`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    const ok = await fetch(`${url}-/ping`).then((r) => r.ok, () => false);
    if (ok) break;
    if (Date.now() > deadline || proc.exitCode !== null) throw new Error(`verdaccio did not start on ${url}`);
    await Bun.sleep(200);
  }
  return {
    url,
    async stop() {
      proc.kill("SIGTERM");
      await proc.exited;
    },
  };
}

async function freePort(): Promise<number> {
  const server = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = server.port;
  server.stop(true);
  return port;
}

/** name@version of every package the production install needs (the tree npm resolved for this checkout). */
export async function productionPackages(): Promise<string[]> {
  const tree = JSON.parse(await run(["npm", "ls", "--omit=dev", "--all", "--json"], { cwd: ROOT })) as { dependencies?: Record<string, Dep> };
  interface Dep {
    version?: string;
    dependencies?: Record<string, Dep>;
  }
  const seen = new Set<string>();
  const walk = (deps: Record<string, Dep> | undefined) => {
    // A "deduped" entry has no dependencies of its own listed: every entry is walked, not only the first.
    for (const [name, dep] of Object.entries(deps ?? {})) {
      if (dep.version !== undefined) seen.add(`${name}@${dep.version}`);
      walk(dep.dependencies);
    }
  };
  walk(tree.dependencies);
  return [...seen].sort();
}

/** The original tarball of `spec` (name@version), fetched once with `npm pack` from the machine's normal registry. */
async function mirrored(specs: readonly string[]): Promise<Map<string, string>> {
  mkdirSync(MIRROR, { recursive: true });
  const fileOf = (spec: string) => {
    const at = spec.lastIndexOf("@");
    return `${spec.slice(0, at).replace(/^@/, "").replace("/", "-")}-${spec.slice(at + 1)}.tgz`;
  };
  const missing = specs.filter((s) => !existsSync(path.join(MIRROR, fileOf(s))));
  if (missing.length > 0) await run(["npm", "pack", "--silent", "--pack-destination", MIRROR, ...missing], { cwd: MIRROR, timeoutMs: 600_000 });
  return new Map(specs.map((s) => [s, path.join(MIRROR, fileOf(s))]));
}

/** The package.json inside a tarball (its top directory is usually, not always, `package/`). */
async function manifestOf(tarball: string): Promise<Record<string, unknown>> {
  const list = (await run(["tar", "-tzf", tarball])).split("\n");
  const entry = list.find((l) => /^[^/]+\/package\.json$/.test(l));
  if (entry === undefined) throw new Error(`${tarball} holds no package.json`);
  return JSON.parse(await run(["tar", "-xzOf", tarball, entry])) as Record<string, unknown>;
}

/** Publishes a tarball as npm publish does (one PUT with the manifest and the tarball attached). */
export async function publish(registry: Registry, tarball: string): Promise<void> {
  const manifest = await manifestOf(tarball);
  const name = String(manifest.name);
  const version = String(manifest.version);
  const bytes = readFileSync(tarball);
  const file = `${name.replace(/^@[^/]+\//, "")}-${version}.tgz`;
  const body = {
    _id: name,
    name,
    "dist-tags": { latest: version },
    versions: {
      [version]: {
        ...manifest,
        _id: `${name}@${version}`,
        dist: {
          shasum: createHash("sha1").update(bytes).digest("hex"),
          integrity: `sha512-${createHash("sha512").update(bytes).digest("base64")}`,
          tarball: `${registry.url}${name}/-/${file}`,
        },
      },
    },
    _attachments: { [file]: { content_type: "application/octet-stream", data: bytes.toString("base64"), length: bytes.length } },
  };
  const response = await fetch(`${registry.url}${name.replace("/", "%2f")}`, { method: "PUT", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  if (!response.ok) throw new Error(`publishing ${name}@${version} to ${registry.url}: ${response.status} ${await response.text()}`);
}

/** Publishes every production dependency of this checkout into `registry` (a few at a time). */
export async function publishDependencies(registry: Registry): Promise<number> {
  const tarballs = [...(await mirrored(await productionPackages())).values()];
  for (let i = 0; i < tarballs.length; i += 8) await Promise.all(tarballs.slice(i, i + 8).map((t) => publish(registry, t)));
  return tarballs.length;
}

export function mirrorFiles(): string[] {
  return existsSync(MIRROR) ? readdirSync(MIRROR) : [];
}
