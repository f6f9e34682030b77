// The headless daemon's periodic stats lines do not lag: each line's rates cover the last --stats-interval whole
// seconds before it (complete seconds only), so a line whose window began after the client's load stopped shows
// zero, not the run's peak. Checked with fio at a fixed rate against `--json --stats-interval 1`.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { type Daemon, SERVER, skipReason, startDaemon, stopAndRemove, tempDir } from "../clients/helpers.ts";
import { fio } from "../clients/fio-jobs.ts";
import { statsWhere } from "../clients/daemon-stats.ts";

const skip = SERVER === "nbdkit" ? "nbdkit prints no stats lines" : skipReason("stats lines", ["fio"]);
const INTERVAL_S = 1;
/** fio's `rate=20m` (fio's k and m are powers of 1024). */
const RATE = 20 * 1024 * 1024;

interface RateLine {
  type: string;
  /** When the daemon took the snapshot, ms since the epoch. */
  time: number;
  windowSeconds: number;
  writeIops: number;
  writeBytesPerSecond: number;
  readIops: number;
  readBytesPerSecond: number;
}

function rateLines(stdout: string): RateLine[] {
  return stdout
    .split("\n")
    .filter((l) => l.startsWith('{"type":"stats"') && l.endsWith("}"))
    .map((l) => JSON.parse(l) as RateLine);
}

/** The start of the whole seconds a line printed at `time` covers, as the daemon counts them (interval 1 s: the last complete second). */
const windowStart = (line: RateLine) => (Math.floor(line.time / 1000) - INTERVAL_S) * 1000;

describe.skipIf(skip !== undefined)("headless stats lines", () => {
  let dir: string;
  let daemon: Daemon;

  beforeAll(async () => {
    dir = tempDir("stats-lines");
    daemon = await startDaemon({ devType: "mem", size: "256MiB", storeDir: dir, statsIntervalS: INTERVAL_S });
  });

  afterAll(() => stopAndRemove(daemon, dir));

  test("a line whose window began after the load stopped shows zero rates; during the load a line shows the load's rate", async () => {
    // 2.5 s of writes at a fixed rate: at least one whole second of it falls inside one line's window.
    await fio(dir, "paced", `[paced]\nioengine=nbd\nuri=${daemon.uri}\nrw=write\nbs=64k\nsize=64m\nrate=20m\ntime_based\nruntime=2500ms\n`);
    const stopped = Date.now();
    const after = (await statsWhere(daemon, (l) => windowStart(l as unknown as RateLine) >= stopped, 5000, "whose window began after fio exited")) as unknown as RateLine;
    const lines = rateLines(daemon.stdout());
    // The window is the interval between two lines, so no line repeats an earlier second.
    expect(lines.every((l) => l.windowSeconds === INTERVAL_S)).toBe(true);
    const peak = Math.max(...lines.map((l) => l.writeBytesPerSecond));
    expect(peak).toBeGreaterThan(RATE * 0.6);
    expect(peak).toBeLessThan(RATE * 1.4);
    // The first line that counts only seconds after the load, printed at most 2 s (plus one interval) after it, is idle.
    expect(after.time - stopped).toBeLessThan(2000 + INTERVAL_S * 1000);
    expect([after.writeIops, after.writeBytesPerSecond, after.readIops, after.readBytesPerSecond]).toEqual([0, 0, 0, 0]);
  }, 20_000);
});
