/**
 * Durations on the command line in the Go original's spelling (Go's time.ParseDuration: `500ms`, `1m`, `1h30m`,
 * `2.5s`, units ns, us/µs, ms, s, m, h, combinable), and a plain number as seconds (`10`, `2.5`). Returns seconds.
 */

const UNIT_SECONDS: Readonly<Record<string, number>> = { ns: 1e-9, us: 1e-6, "µs": 1e-6, "μs": 1e-6, ms: 1e-3, s: 1, m: 60, h: 3600 };

/** Seconds, or undefined when `text` is not a duration. `0` (with or without a unit) is 0. */
export function parseDuration(text: string): number | undefined {
  const trimmed = text.trim();
  if (/^\d+(\.\d+)?$/.test(trimmed)) return Number(trimmed);
  if (trimmed === "" || !/^(\d+(\.\d+)?(ns|us|µs|μs|ms|s|m|h))+$/.test(trimmed)) return undefined;
  let seconds = 0;
  for (const m of trimmed.matchAll(/(\d+(?:\.\d+)?)(ns|us|µs|μs|ms|s|m|h)/g)) seconds += Number(m[1]) * UNIT_SECONDS[m[2]!]!;
  return seconds;
}
