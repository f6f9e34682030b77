/** Byte counts for people, shared by the engine's messages, the CLI and the dashboard. */

/** Formats bytes with the largest binary unit that keeps the number readable: `1 GiB`, `1.5 MiB`, `512 B`. */
export function formatSize(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let value = bytes;
  let i = 0;
  while (Math.abs(value) >= 1024 && i < units.length - 1) {
    value /= 1024;
    i++;
  }
  const text = Number.isInteger(value) ? String(value) : value.toFixed(value < 10 ? 2 : 1).replace(/\.?0+$/, "");
  return `${text} ${units[i]}`;
}
