/**
 * Human sizes on the command line (`20GiB`, `100 MiB`, `1.5G`, `4096`); src/shared/format-size.ts writes them back.
 * Single letters and IEC suffixes are powers of 1024, as in qemu-img (`20G` is 20 GiB); KB/MB/GB/TB are powers of
 * 1000. The Go original read single letters as powers of 1000 too, so a seed command line's `20G` is 7.4% larger
 * here; both spell 20 GiB as `20GiB`.
 */

const UNITS: Readonly<Record<string, number>> = {
  "": 1,
  b: 1,
  k: 1024,
  ki: 1024,
  kib: 1024,
  kb: 1000,
  m: 1024 ** 2,
  mi: 1024 ** 2,
  mib: 1024 ** 2,
  mb: 1000 ** 2,
  g: 1024 ** 3,
  gi: 1024 ** 3,
  gib: 1024 ** 3,
  gb: 1000 ** 3,
  t: 1024 ** 4,
  ti: 1024 ** 4,
  tib: 1024 ** 4,
  tb: 1000 ** 4,
  p: 1024 ** 5,
  pib: 1024 ** 5,
  pb: 1000 ** 5,
};

export class SizeError extends Error {}

/** Parses a size into whole bytes; throws SizeError with the accepted forms when it cannot. */
export function parseSize(text: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  const unit = match ? UNITS[match[2]!.toLowerCase()] : undefined;
  if (!match || unit === undefined) {
    throw new SizeError(`cannot read "${text}" as a size: use bytes or a unit, like 4096, 512K, 100 MiB, 1.5G or 20GiB`);
  }
  const bytes = Number(match[1]) * unit;
  if (!Number.isSafeInteger(Math.round(bytes))) throw new SizeError(`size "${text}" is too large`);
  if (Math.abs(bytes - Math.round(bytes)) > 1e-6) throw new SizeError(`size "${text}" is not a whole number of bytes`);
  return Math.round(bytes);
}
