/**
 * The daemon's JSON stats lines (`--json --stats-interval N`) for the suites that check a device's own gauges:
 * parse them from its stdout, wait for the next one or for one that satisfies a condition, and read a gauge.
 * Such suites skip under USBD_TEST_SERVER=nbdkit, which prints no gauges.
 */
import { type Daemon, SERVER, skipReason } from "./helpers.ts";

const STATS_WAIT_MS = 5000;

export interface Gauge {
  readonly name: string;
  readonly value: number;
}
export interface StatsLine {
  readonly type: "stats" | "final";
  readonly gauges?: readonly Gauge[];
}

/** The daemon's complete JSON stats lines of `type` (a line still being written is left out). */
export function statsLines(stdout: string, type: StatsLine["type"]): StatsLine[] {
  const complete = stdout.slice(0, stdout.lastIndexOf("\n") + 1);
  return complete
    .split("\n")
    .filter((l) => l.startsWith(`{"type":"${type}"`))
    .map((l) => JSON.parse(l) as StatsLine);
}

/** The first stats line the daemon prints after this call: one that reflects everything done before it. */
export async function nextStats(daemon: Daemon): Promise<StatsLine> {
  return statsWhere(daemon, () => true, STATS_WAIT_MS);
}

/**
 * The newest stats line printed after this call for which `accept` holds, waiting up to `timeoutMs`; the error
 * says `what` was waited for and carries the newest line's gauges and the daemon's stderr.
 */
export async function statsWhere(daemon: Daemon, accept: (line: StatsLine) => boolean, timeoutMs: number, what = ""): Promise<StatsLine> {
  let seen = statsLines(daemon.stdout(), "stats").length;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const lines = statsLines(daemon.stdout(), "stats");
    // Newest first: the line that reflects the most.
    const found = lines.slice(seen).reverse().find(accept);
    if (found !== undefined) return found;
    seen = lines.length;
    if (Date.now() > deadline) {
      const newest = JSON.stringify(lines.at(-1)?.gauges);
      throw new Error(`no new stats line${what === "" ? "" : ` ${what}`} within ${timeoutMs} ms; newest gauges: ${newest}\n--- stderr ---\n${daemon.stderr().trim()}`);
    }
    await Bun.sleep(50);
  }
}

/** The final line a stopped daemon printed (its stats after flush and close). */
export function finalStats(stdout: string): StatsLine {
  const finals = statsLines(stdout, "final");
  if (finals.length !== 1) throw new Error(`expected one final stats line, got ${finals.length}:\n${stdout.slice(-3000)}`);
  return finals[0]!;
}

export function gauge(line: StatsLine, name: string): number {
  const found = line.gauges?.find((g) => g.name === name);
  if (found === undefined) throw new Error(`no "${name}" gauge in ${JSON.stringify(line.gauges)}`);
  return found.value;
}

/** Stops a daemon cleanly (exit 0 asserted) and returns its final stats line. */
export async function stopForStats(daemon: Daemon): Promise<StatsLine> {
  return finalStats(await daemon.stop());
}

/** Why a suite that checks `kind`'s gauges must skip: a missing binary, or nbdkit as the server (no such device, no gauges). */
export function gaugeSuiteSkipReason(suite: string, kind: string, binaries: readonly string[]): string | undefined {
  if (SERVER !== "nbdkit") return skipReason(suite, binaries);
  const reason = `${suite}: skipped, it checks the ${kind} device's own gauges and USBD_TEST_SERVER=nbdkit has none`;
  console.warn(reason);
  return reason;
}
