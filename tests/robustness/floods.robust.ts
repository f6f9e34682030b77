/**
 * Acceptance for bounded memory: clients that send and never read their replies (32 MiB READs, 4 KiB WRITEs,
 * handshake INFO options), one connection and then 50 at once, cannot push the daemon's resident memory past the
 * documented bound, while a well-behaved client on another connection keeps writing and verifying its data, and the
 * daemon still exits 0 on SIGTERM afterwards. Before the budget, one connection of 32 MiB READs took the daemon past
 * 600 MB in 8 s (and 5.3 GB in a longer run).
 */
import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { type Daemon, startDaemon, stopAndRemove, tempDir } from "../clients/helpers.ts";
import { SPARE_POOL_BYTES } from "../../src/engine/spill-ring.ts";
import { type FloodKind, UNCOLLECTED_ALLOWANCE, openSockets, residentBytes, sampleResident, startFlood, startWitness } from "./flood-clients.ts";

setDefaultTimeout(120_000);

const MiB = 1024 * 1024;
/** The budget the daemon runs with here (the default is 256 MiB; a smaller one makes the bound tight to test). */
const MAX_BUFFER = 64 * MiB;
/**
 * The documented bound over the idle daemon's RSS: --max-buffer, plus per connection its guaranteed 256 KiB and its
 * reusable buffers (reply staging, receive buffers: counted generously here as 1.25 MiB), plus the process-wide pool
 * of spare spill blocks, plus what the collector and the allocator have not given back (UNCOLLECTED_ALLOWANCE), plus the device pages the clients
 * fill: the witness's 16 MiB region and, for the write flood, the 16 MiB it writes over and over.
 */
function bound(kind: FloodKind, connections: number): number {
  const devicePages = 16 * MiB + (kind === "write-4k" ? 16 * MiB : 0);
  return MAX_BUFFER + connections * 1.5 * MiB + SPARE_POOL_BYTES + UNCOLLECTED_ALLOWANCE + devicePages;
}
const FLOOD_SECONDS = 6;

const daemons: Array<{ daemon: Daemon; dir: string }> = [];
afterAll(async () => {
  for (const { daemon } of daemons) daemon.kill();
});

for (const kind of ["read-32m", "write-4k", "info"] as FloodKind[]) {
  describe(`clients that never read their replies: ${kind}`, () => {
    for (const connections of [1, 50]) {
      test(`${connections} such connection(s): RSS stays under the bound, a normal client keeps working, SIGTERM exits 0`, async () => {
        const dir = tempDir("flood");
        const daemon = await startDaemon({ devType: "mem", size: "1GiB", storeDir: dir, storeName: "disk", extraArgs: [`--max-buffer=${MAX_BUFFER}`] });
        daemons.push({ daemon, dir });
        const pid = daemon.proc.pid;
        await Bun.sleep(300);
        const idle = residentBytes(pid);
        const socketsIdle = openSockets(pid);
        const sampler = sampleResident(pid);
        const witness = await startWitness(daemon.socket, "disk", { offset: 1000 * MiB, length: 16 * MiB });
        const floods = [];
        for (let i = 0; i < connections; i++) floods.push(await startFlood(daemon.socket, kind, "disk", 900 * MiB));
        await Bun.sleep(FLOOD_SECONDS * 1000);
        const peak = sampler.stop();
        const rounds = witness.rounds();
        await witness.stop();
        for (const f of floods) f.close();
        // Every flooding connection is let go, though the server had stopped reading most of them.
        for (let i = 0; i < 100 && openSockets(pid) > socketsIdle; i++) await Bun.sleep(50);
        expect(openSockets(pid)).toBeLessThanOrEqual(socketsIdle);

        expect(witness.failures()).toEqual([]);
        expect(rounds).toBeGreaterThan(10);
        const grown = Math.round((peak - idle) / MiB);
        console.log(`flood ${kind} x${connections}: RSS peak ${grown} MiB over idle, bound ${Math.round(bound(kind, connections) / MiB)} MiB`);
        expect(grown).toBeLessThanOrEqual(Math.round(bound(kind, connections) / MiB));
        await stopAndRemove(daemon, dir);
      });
    }
  });
}
