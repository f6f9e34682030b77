/**
 * Units, number formatting, a percentile and the progress log: the small things every part of the objstore bench
 * (bench/objstore.ts) uses.
 */

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;

/** MB/s: 10^6 bytes per second. */
export const mb = (bytes: number, seconds: number) => bytes / seconds / 1e6;
export const sizeName = (n: number) => (n >= GiB && n % GiB === 0 ? `${n / GiB} GiB` : n >= MiB && n % MiB === 0 ? `${n / MiB} MiB` : `${n / KiB} KiB`);
/** A number with `d` decimals, or "-" for NaN and the infinities (a measurement that did not happen). */
export const fx = (v: number, d = 1) => (Number.isFinite(v) ? v.toFixed(d) : "-");
export const now = () => performance.now();

/** The nearest-rank percentile (a member of `xs`, never an interpolation); NaN for no values. */
export function percentile(xs: readonly number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return Number.NaN;
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

/** A progress line on stderr (stdout carries only the Markdown report). */
export function log(msg: string): void {
  process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}
