/**
 * Fuzzing over a real socket: fuzzed handshakes, request streams and raw byte mutations from several connections at
 * once (tests/robustness/fuzz-client.ts), while a well-behaved client writes and verifies a pattern on another
 * connection. It asserts that the daemon never exits, that every answer the spec requires came (or the connection
 * closed where the spec requires that), that the good client never sees an error or a wrong byte, that RSS stays
 * under the documented bound, and that SIGTERM afterwards exits 0.
 *
 * About a minute by default; USBD_FUZZ_SECONDS=600 for a long run, USBD_FUZZ_SEED=N to replay a run.
 */
import { afterAll, expect, setDefaultTimeout, test } from "bun:test";
import { type Daemon, startDaemon, stopAndRemove, tempDir } from "../clients/helpers.ts";
import { SPARE_POOL_BYTES } from "../../src/engine/spill-ring.ts";
import { DAEMON_PURGE_DELAY_MS } from "../../src/app/allocator-tuning.ts";
import { UNCOLLECTED_ALLOWANCE, residentBytes, sampleResident, startWitness } from "./flood-clients.ts";
import { type FuzzTarget, Rng, fuzzHandshake, fuzzRaw, fuzzRequests } from "./fuzz-client.ts";

const SECONDS = Number(process.env.USBD_FUZZ_SECONDS ?? 45);
const SEED = Number(process.env.USBD_FUZZ_SEED ?? Date.now() % 1_000_000);
const PARALLEL = 4;
const MiB = 1024 * 1024;
const MAX_BUFFER = 64 * MiB;
const SIZE = 256 * MiB;
/** The device's pages for what the fuzzer (first 32 MiB) and the witness (last 16 MiB) write. */
const DEVICE_PAGES = 48 * MiB;
/** What may stay resident over the settled bound once the load stopped: the collector's own heap and caches. */
const SETTLED_ALLOWANCE = 64 * MiB;

setDefaultTimeout((SECONDS + 150) * 1000);

let daemon: Daemon | undefined;
afterAll(() => daemon?.kill());

test(`fuzzed handshakes, requests and raw bytes for ${SECONDS} s (seed ${SEED}): the daemon survives and answers as the spec requires`, async () => {
  const dir = tempDir("fuzz");
  daemon = await startDaemon({
    devType: "mem",
    size: "256MiB",
    storeDir: dir,
    storeName: "disk",
    extraArgs: [`--max-buffer=${MAX_BUFFER}`, "--handshake-timeout=3", "--max-connections=64"],
  });
  // Fuzzed requests stay in the first 32 MiB (and past the end), so the device's own pages stay small.
  const target: FuzzTarget = { path: daemon.socket, exports: ["disk"], size: SIZE, writableBelow: 32 * MiB };
  await Bun.sleep(300);
  const idle = residentBytes(daemon.proc.pid);
  const rss = sampleResident(daemon.proc.pid);
  const witness = await startWitness(daemon.socket, "disk", { offset: SIZE - 16 * MiB, length: 16 * MiB });

  const problems: string[] = [];
  const sessions: Record<string, number> = { handshake: 0, requests: 0, raw: 0 };
  const deadline = Date.now() + SECONDS * 1000;
  await Promise.all(
    Array.from({ length: PARALLEL }, async (_, lane) => {
      const rng = new Rng(SEED * 31 + lane);
      for (let n = 0; Date.now() < deadline; n++) {
        const mode = rng.pick(["handshake", "handshake", "requests", "requests", "raw"] as const);
        sessions[mode]!++;
        const found = mode === "handshake" ? await fuzzHandshake(target, rng) : mode === "requests" ? await fuzzRequests(target, rng) : await fuzzRaw(target, rng);
        for (const p of found) problems.push(`lane ${lane} session ${n} (${mode}): ${p}`);
        if (daemon!.proc.exitCode !== null) return;
      }
    }),
  );
  const peak = rss.stop();
  const rounds = witness.rounds();
  await witness.stop();

  expect(daemon.proc.exitCode).toBeNull();
  expect(problems.slice(0, 20)).toEqual([]);
  expect(witness.failures()).toEqual([]);
  expect(rounds).toBeGreaterThan(20);
  expect(sessions.handshake! + sessions.requests! + sessions.raw!).toBeGreaterThan(100);
  console.log(`fuzz: seed ${SEED}, sessions ${JSON.stringify(sessions)}, witness rounds ${rounds}, RSS +${Math.round((peak - idle) / MiB)} MiB`);
  // The bound of floods.robust.ts: the budget, 1.5 MiB per connection (64 at most), the spare spill blocks and what
  // the collector and allocator have not given back, plus the device's pages for the data the fuzzer and the
  // witness wrote (32 + 16 MiB).
  const bound = MAX_BUFFER + 64 * 1.5 * MiB + SPARE_POOL_BYTES + UNCOLLECTED_ALLOWANCE + DEVICE_PAGES;
  expect(Math.round((peak - idle) / MiB)).toBeLessThanOrEqual(Math.round(bound / MiB));

  // Once the load stops, the allocator returns what it no longer uses within its purge delay
  // (src/app/allocator-tuning.ts), so resident memory falls back towards idle: the device's pages for what was
  // written and the spare spill blocks (the budget holds nothing once the clients are gone). With purging off
  // (MIMALLOC_PURGE_DELAY=-1) it stays at the high-water mark and this fails.
  const settledBound = idle + DEVICE_PAGES + SPARE_POOL_BYTES + SETTLED_ALLOWANCE;
  const waitMs = Number(DAEMON_PURGE_DELAY_MS) + 30_000;
  const settleStart = Date.now();
  let settled = residentBytes(daemon.proc.pid);
  const timeline: number[] = [];
  while (settled > settledBound && Date.now() - settleStart < waitMs) {
    await Bun.sleep(1000);
    settled = residentBytes(daemon.proc.pid);
    timeline.push(Math.round((settled - idle) / MiB));
  }
  console.log(`fuzz: after the load, RSS +${Math.round((settled - idle) / MiB)} MiB over idle after ${Math.round((Date.now() - settleStart) / 1000)} s (bound +${Math.round((settledBound - idle) / MiB)} MiB; each second: ${timeline.join(" ")})`);
  expect(Math.round((settled - idle) / MiB)).toBeLessThanOrEqual(Math.round((settledBound - idle) / MiB));
  await stopAndRemove(daemon, dir);
});
