/**
 * Debian's OpenStack Swift "all in one" for the suites: memcached, one account, container and object server with one
 * replica on one device, and a proxy with tempauth (auth v1) and the s3api middleware (the S3 API, with SigV4
 * signatures checked), every one on 127.0.0.1 on a free port, rings and storage in a temporary directory. Each
 * server's configuration names that directory as `swift_dir`, so /etc/swift is never read. `stop()` and
 * `restart()` take every process down and up again on the same ports with the same data (memcached too, so the
 * tokens it held are gone, as after a real restart). The facts this rests on: /work/shared/TEST-SERVERS.md.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { ObjectStoreConfig } from "../../src/devices/objstore/store/config.ts";
import { freePort } from "./ports.ts";
import { watch, type Watched } from "./process.ts";

/**
 * The tempauth account and users; through s3api the access key is `account:user` and the secret is the key. The
 * key is no plain word, so that the suites can check it appears in nothing a daemon prints.
 */
export const SWIFT_USER = "test:tester";
export const SWIFT_KEY = "testing-Sw1ft-key-5e7a";

export interface SwiftServer {
  /** The proxy's base URL: `http://127.0.0.1:<port>`. */
  readonly url: string;
  /** Auth v1 (tempauth): `<url>/auth/v1.0`. */
  readonly authUrl: string;
  readonly port: number;
  readonly directory: string;
  stop(): Promise<void>;
  restart(): Promise<void>;
  cleanup(): Promise<void>;
}

type Role = "account" | "container" | "object";
const ROLES: readonly Role[] = ["account", "container", "object"];

function storageConfig(role: Role, dir: string, port: number): string {
  return `[DEFAULT]
bind_ip = 127.0.0.1
bind_port = ${port}
workers = 1
user = root
swift_dir = ${dir}
devices = ${dir}/srv
mount_check = false
log_level = WARNING

[pipeline:main]
pipeline = ${role}-server

[app:${role}-server]
use = egg:swift#${role}

[${role}-replicator]
[${role}-auditor]
${role === "account" ? "" : `[${role}-updater]`}
`;
}

function proxyConfig(dir: string, port: number, memcachePort: number): string {
  return `[DEFAULT]
bind_ip = 127.0.0.1
bind_port = ${port}
workers = 1
user = root
swift_dir = ${dir}
log_level = WARNING

[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats s3api tempauth copy slo dlo versioned_writes proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
# With one replica a storage server has no peer to fail over to, and the proxy's default (a node with more than 10
# errors is skipped until 60 s pass without one) turned every restart into a minute of 503s: the requests that met
# the servers still starting were enough. CI saw exactly that twice ("container PUT answered 503" for 60 s).
error_suppression_interval = 1

[filter:tempauth]
use = egg:swift#tempauth
user_test_tester = ${SWIFT_KEY} .admin

[filter:s3api]
use = egg:swift#s3api

[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:${memcachePort}

[filter:catch_errors]
use = egg:swift#catch_errors
[filter:gatekeeper]
use = egg:swift#gatekeeper
[filter:healthcheck]
use = egg:swift#healthcheck
[filter:proxy-logging]
use = egg:swift#proxy_logging
[filter:listing_formats]
use = egg:swift#listing_formats
[filter:copy]
use = egg:swift#copy
[filter:slo]
use = egg:swift#slo
[filter:dlo]
use = egg:swift#dlo
[filter:versioned_writes]
use = egg:swift#versioned_writes
`;
}

const SWIFT_CONF = `[swift-hash]
swift_hash_path_suffix = usbd-tui-tests
swift_hash_path_prefix = usbd-tui-tests

[storage-policy:0]
name = Policy-0
default = yes
`;

/** One Python run builds the three one-replica rings (swift-ring-builder would take nine). */
function buildRings(dir: string, ports: Record<Role, number>): void {
  const script = `
from swift.common.ring import RingBuilder
import sys
for name, port in (("account", ${ports.account}), ("container", ${ports.container}), ("object", ${ports.object})):
    b = RingBuilder(6, 1, 1)
    b.add_dev({"id": 0, "region": 1, "zone": 1, "ip": "127.0.0.1", "port": port, "device": "d1", "weight": 1})
    b.rebalance()
    b.get_ring().save(f"${dir}/{name}.ring.gz")
`;
  const result = Bun.spawnSync(["/usr/bin/python3", "-c", script], { stdout: "pipe", stderr: "pipe" });
  if (result.exitCode !== 0) throw new Error(`building Swift's rings failed: ${result.stderr.toString()}`);
}

/** Polls until auth v1 answers and a container can be made: then all four servers are up. */
async function ready(url: string, processes: readonly Watched[], timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = "";
  while (Date.now() < deadline) {
    const dead = processes.find((p) => p.exitCode() !== null);
    if (dead !== undefined) {
      throw new Error(`${dead.command.join(" ")} exited with ${dead.exitCode()}\n--- stderr ---\n${dead.stderr().trim()}\n--- stdout ---\n${dead.stdout().trim()}`);
    }
    try {
      const auth = await fetch(`${url}/auth/v1.0`, { headers: { "X-Auth-User": SWIFT_USER, "X-Auth-Key": SWIFT_KEY }, signal: AbortSignal.timeout(2000) });
      const token = auth.headers.get("x-auth-token");
      const storage = auth.headers.get("x-storage-url");
      if (auth.ok && token !== null && storage !== null) {
        const put = await fetch(`${storage}/.usbd-ready`, { method: "PUT", headers: { "X-Auth-Token": token }, signal: AbortSignal.timeout(5000) });
        if (put.status === 201 || put.status === 202) {
          await fetch(`${storage}/.usbd-ready`, { method: "DELETE", headers: { "X-Auth-Token": token } });
          return;
        }
        last = `container PUT answered ${put.status}`;
      } else last = `auth answered ${auth.status}`;
    } catch (e) {
      last = e instanceof Error ? e.message : String(e);
    }
    await Bun.sleep(200);
  }
  const logs = processes.map((p) => `--- ${p.command[0]} ---\n${p.stderr().trim().slice(-2000)}`).join("\n");
  throw new Error(`Swift did not come up within ${timeoutMs} ms (last: ${last})\n${logs}`);
}

export async function startSwift(options: { directory?: string } = {}): Promise<SwiftServer> {
  const owned = options.directory === undefined;
  const dir = options.directory ?? fs.mkdtempSync(path.join(os.tmpdir(), "usbd-swift-"));
  fs.mkdirSync(path.join(dir, "srv", "d1"), { recursive: true });
  const ports = { account: await freePort(), container: await freePort(), object: await freePort() };
  const proxyPort = await freePort();
  const memcachePort = await freePort();
  fs.writeFileSync(path.join(dir, "swift.conf"), SWIFT_CONF);
  for (const role of ROLES) fs.writeFileSync(path.join(dir, `${role}-server.conf`), storageConfig(role, dir, ports[role]));
  fs.writeFileSync(path.join(dir, "proxy-server.conf"), proxyConfig(dir, proxyPort, memcachePort));
  buildRings(dir, ports);
  const url = `http://127.0.0.1:${proxyPort}`;

  let running: Watched[] = [];
  const launch = async (): Promise<void> => {
    running = [
      watch(["memcached", "-u", "root", "-l", "127.0.0.1", "-p", String(memcachePort), "-U", "0", "-m", "32"]),
      ...ROLES.map((role) => watch([`swift-${role}-server`, path.join(dir, `${role}-server.conf`)])),
      watch(["swift-proxy-server", path.join(dir, "proxy-server.conf")]),
    ];
    await ready(url, running, 60_000);
  };
  const stop = async (): Promise<void> => {
    const processes = running;
    running = [];
    // The proxy first, so that no request half-reaches the storage servers while they go; then the rest at once.
    const proxy = processes.pop();
    await proxy?.stop("SIGTERM", 5_000);
    await Promise.all(processes.map((p) => p.stop("SIGTERM", 5_000)));
  };
  try {
    await launch();
  } catch (e) {
    await stop();
    throw e;
  }
  return {
    url,
    authUrl: `${url}/auth/v1.0`,
    port: proxyPort,
    directory: dir,
    stop,
    async restart() {
      await stop();
      await launch();
    },
    async cleanup() {
      await stop();
      if (owned) fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The swift kind's configuration for `server` (auth v1). */
export function swiftConfig(server: Pick<SwiftServer, "authUrl">, container = "usbd"): ObjectStoreConfig {
  return { authUrl: server.authUrl, user: SWIFT_USER, key: SWIFT_KEY, container };
}

/** The s3 kind's configuration for the proxy's s3api (path style; the region s3api checks SigV4 against). */
export function swiftS3Config(server: Pick<SwiftServer, "url">, bucket = "usbd"): ObjectStoreConfig {
  return { accessKeyId: SWIFT_USER, secretKey: SWIFT_KEY, endpoint: server.url, region: "us-east-1", bucket, pathStyle: true };
}
