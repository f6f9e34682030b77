// `usbd-tui ctl stats` and `usbd-tui ctl trim` against a running headless dedup daemon, driven by nbdsh: the stats
// (text and --json) count what the client did, and a trim of a dedup device reclaims the blocks the client
// trimmed, answers with how many bytes and why, and is reported as a "trimmed" event.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join, resolve } from "node:path";
import { type Daemon, removeDir, run, runResult, skipReason, startDaemon, tempDir } from "../clients/helpers.ts";
import { waitFor, watch } from "../helpers/process.ts";

const ROOT = resolve(import.meta.dir, "../..");
const CLI = [join(ROOT, "node_modules/.bin/bun"), join(ROOT, "bin/usbd-tui.ts")];
const MiB = 1024 * 1024;
// nbdsh runs `python3 -m nbd`: Debian's python has the module, a python3 earlier on the PATH may not.
const nbdModule = Bun.spawnSync(["/usr/bin/python3", "-c", "import nbd"]).exitCode === 0;
const skip = nbdModule ? skipReason("ctl stats and trim", ["nbdsh"]) : "python3-libnbd (nbdsh) is not installed";
if (!nbdModule) console.warn(`ctl stats and trim: skipped, ${skip}`);

/** Runs nbdsh connected to `uri` with `script` (Python; `h` is the connected handle). */
function nbdsh(uri: string, script: string): Promise<string> {
  return run(["nbdsh", "-u", uri, "-c", script], { env: { PATH: `/usr/bin:${process.env.PATH ?? ""}` }, timeoutMs: 30_000 });
}

interface StatsJson {
  type: string;
  device: string;
  totals: Record<string, { ops: number; bytes: number; errors: number }>;
  windowSeconds: number;
  readIops: number;
  writeIops: number;
  readBytesPerSecond: number;
  writeBytesPerSecond: number;
  inFlight: number;
  connections: number;
  gauges: Array<{ name: string; value: number }>;
}

describe.skipIf(skip !== undefined)("ctl stats and ctl trim against a running dedup daemon", () => {
  let dir: string;
  let control: string;
  let daemon: Daemon;
  const ctl = async (...args: string[]) => {
    const r = await runResult([...CLI, "ctl", "--control", control, ...args], { timeoutMs: 20_000 });
    expect(r.exitCode, r.stderr).toBe(0);
    return r.stdout;
  };
  const statsJson = async (): Promise<StatsJson> => {
    const lines = (await ctl("stats", "--json")).trim().split("\n");
    expect(lines).toHaveLength(1);
    return JSON.parse(lines[0]!) as StatsJson;
  };
  const gauge = (s: StatsJson, name: string) => s.gauges.find((g) => g.name === name)?.value;

  beforeAll(async () => {
    dir = tempDir("ctl-stats");
    control = join(dir, "c.sock");
    // No compression: every 4 KiB block the client writes takes 4 KiB of the blocks file, so reclaimed bytes are exact.
    daemon = await startDaemon({ devType: "dedup", size: "64MiB", storeDir: join(dir, "store"), extraArgs: ["--control", control, "--dedup-compress=none"] });
  });

  afterAll(() => {
    daemon?.kill();
    removeDir(dir);
  });

  test("stats counts what the client did: totals in --json, and rates over the last 5 complete seconds in both forms", async () => {
    // 10 writes of 1 MiB of random data (2,560 unique blocks) and 5 reads of 1 MiB, one NBD request each.
    await nbdsh(daemon.uri, ["import os", "for i in range(10): h.pwrite(os.urandom(1 << 20), i << 20)", "for i in range(5): h.pread(1 << 20, i << 20)"].join("\n"));
    // Rates count complete seconds only: ask once the second of the last request is over (and well within 5 s).
    await Bun.sleep(1000 - (Date.now() % 1000) + 50);
    const text = (await ctl("stats")).trim().split("\n");
    expect(text).toHaveLength(1);
    expect(text[0]).toMatch(/^stats usbd: read 1 IOPS 1\.0 MB\/s, write 2 IOPS 2\.1 MB\/s, p50 \d+ us, p99 \d+ us, in-flight 0, connections 0, logical in use 10 MiB, unique blocks 2\.56k, /);
    const s = await statsJson();
    expect(s).toMatchObject({ type: "stats", device: "usbd", windowSeconds: 5, inFlight: 0, connections: 0 });
    expect(s.totals.write).toEqual({ ops: 10, bytes: 10 * MiB, errors: 0 });
    expect(s.totals.read).toEqual({ ops: 5, bytes: 5 * MiB, errors: 0 });
    expect(s.totals.flush!.ops).toBe(0);
    expect([s.writeIops, s.writeBytesPerSecond, s.readIops, s.readBytesPerSecond]).toEqual([2, (10 * MiB) / 5, 1, (5 * MiB) / 5]);
    expect(gauge(s, "unique blocks")).toBe(2560);
    expect(gauge(s, "logical in use")).toBe(10 * MiB);
  });

  test("trim NAME reclaims the blocks the client trimmed: bytes and detail in its answer, a trimmed event, the gauge back to 0", async () => {
    // Committed first (FLUSH), then trimmed: the 2,560 blocks lose their last reference and wait for a commit.
    await nbdsh(daemon.uri, ["h.flush()", "h.trim(10 << 20, 0)"].join("\n"));
    expect(gauge(await statsJson(), "reclaimable blocks")).toBe(2560);

    const answer = (await ctl("trim", "usbd")).trim();
    // Ten whole 1 MiB chunks of the blocks file emptied and were punched out.
    expect(answer).toMatch(/^usbd: 2,560 blocks freed \(10 MiB\) in [0-9.]+ ms$/);
    const after = await statsJson();
    expect(gauge(after, "reclaimable blocks")).toBe(0);
    expect(gauge(after, "unique blocks")).toBe(0);

    const again = JSON.parse(await ctl("trim", "usbd", "--json")) as { method: string; bytes: number; detail: string; ms: number };
    expect(again).toMatchObject({ method: "reclaim", bytes: 0, detail: "no unreferenced blocks to free" });

    // The daemon's kept events, as `ctl events --last N` replays them before streaming.
    const events = watch([...CLI, "ctl", "--control", control, "events", "--json", "--last", "50"]);
    try {
      const trimmed = await waitFor(
        "both trimmed events",
        events,
        () => {
          const found = events.stdout().split("\n").filter((l) => l.includes('"kind":"trimmed"'));
          return found.length >= 2 ? found.map((l) => JSON.parse(l) as { device: string; kind: string; level: string; message: string }) : undefined;
        },
        10_000,
      );
      expect(trimmed[0]).toMatchObject({ device: "usbd", kind: "trimmed", level: "info" });
      expect(trimmed[0]!.message).toMatch(/^reclaimed 10 MiB \(2,560 blocks freed\) in [0-9.]+ ms$/);
      expect(trimmed[1]!.message).toMatch(/^reclaimed 0 B \(no unreferenced blocks to free\) in [0-9.]+ ms$/);
    } finally {
      events.kill();
    }
  });
});
