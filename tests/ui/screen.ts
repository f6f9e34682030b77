/** Reading the dashboard's text the way a user does, for the component tests and the tmux test alike. */

/** The lines of one mem device's panel: from its title to its bottom border. */
export function panelOf(screen: string, device: string): string {
  const lines = screen.split("\n");
  const start = lines.findIndex((l) => l.includes(`${device} · mem`));
  if (start < 0) return "";
  const end = lines.findIndex((l, i) => i > start && /^[└╚]/.test(l));
  return lines.slice(start, end < 0 ? undefined : end + 1).join("\n");
}

/** The read (R) or write (W) IOPS a panel shows, with its k/M suffix undone; NaN when the line is missing. */
export function iopsOf(panel: string, letter: "R" | "W"): number {
  const match = new RegExp(`${letter}\\s+([0-9.]+)(k|M)?\\s+IOPS`).exec(panel);
  if (!match) return Number.NaN;
  return Number(match[1]) * (match[2] === "k" ? 1e3 : match[2] === "M" ? 1e6 : 1);
}

/** The flush counter a panel shows; NaN when missing. */
export function flushesOf(panel: string): number {
  return Number(/flushes ([0-9.]+)/.exec(panel)?.[1] ?? Number.NaN);
}
