/**
 * The warning for an export reachable from the network without TLS: a TCP bind to a non-loopback address without
 * --tls require logs that the disk is exposed unauthenticated and how to fix it, and the Host makes that warning an
 * event (the dashboard's event pane shows events); loopback binds, Unix sockets and --tls require give none.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createMemDevice } from "../../src/devices/mem/index.ts";
import { Host, type HostEvent } from "../../src/engine/host.ts";
import { loadTlsConfig } from "../../src/engine/tls.ts";
import { silentLogger } from "../../src/shared/log.ts";
import { removeDir, tempDir } from "../clients/helpers.ts";
import { makePki } from "../helpers/tls-certs.ts";

const missingOpenssl = Bun.which("openssl") === null;
let root: string;

beforeAll(() => {
  root = tempDir("bind");
});
afterAll(() => removeDir(root));

async function warningsFor(address: Parameters<Host["serve"]>[0], tls?: ReturnType<typeof loadTlsConfig>): Promise<HostEvent[]> {
  const host = new Host(silentLogger);
  const events: HostEvent[] = [];
  host.subscribe((e) => events.push(e));
  const hosted = host.add("disk", createMemDevice({ size: 1 << 20 }));
  try {
    await host.serve(address, [hosted], tls === undefined ? {} : { tls });
  } finally {
    await host.stop({ force: true });
  }
  return events.filter((e) => e.kind === "warning");
}

describe("a network bind without TLS", () => {
  test("0.0.0.0 without --tls: a warning event that says the disk is exposed and how to fix it", async () => {
    const warnings = await warningsFor({ kind: "tcp", host: "0.0.0.0", port: 0 });
    expect(warnings).toHaveLength(1);
    expect(warnings[0]!.message).toContain("exposed unauthenticated");
    expect(warnings[0]!.message).toContain("--tls require");
  });

  test("127.0.0.1 and a Unix socket: no warning", async () => {
    expect(await warningsFor({ kind: "tcp", host: "127.0.0.1", port: 0 })).toEqual([]);
    expect(await warningsFor({ kind: "unix", path: `${root}/s.sock` })).toEqual([]);
  });

  test.skipIf(missingOpenssl)("0.0.0.0 with --tls on still warns; with --tls require it does not", async () => {
    const pki = makePki(`${root}/pki`);
    expect(await warningsFor({ kind: "tcp", host: "0.0.0.0", port: 0 }, loadTlsConfig("on", pki.server, false))).toHaveLength(1);
    expect(await warningsFor({ kind: "tcp", host: "0.0.0.0", port: 0 }, loadTlsConfig("require", pki.server, false))).toEqual([]);
  });
});
