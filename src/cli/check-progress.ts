/**
 * What `usbd-tui check` shows while it runs (about 19 us per block: minutes on a large store): a bar redrawn in
 * place on a terminal, a line every few seconds otherwise (a log, a pipe), always on stderr so stdout (and --json)
 * keeps only the verdict.
 */
import type { CheckProgress } from "../devices/dedup/check.ts";

const PHASES: Readonly<Record<CheckProgress["phase"], string>> = { blocks: "reading and hashing blocks", map: "checking the map" };
/** A terminal's bar is redrawn at most this often; other output gets a line at most this often. */
const BAR_EVERY_MS = 100;
const LINE_EVERY_MS = 5000;

/** `checking the map ███████░░░░░░ 54% (1,234 of 2,280)` in at most `width` columns. */
export function progressText(p: CheckProgress, width: number): string {
  const percent = p.total === 0 ? 100 : Math.min(100, Math.floor((p.done / p.total) * 100));
  const counts = `${percent}% (${p.done.toLocaleString("en-US")} of ${p.total.toLocaleString("en-US")})`;
  const label = PHASES[p.phase];
  const room = width - label.length - counts.length - 2;
  if (room < 10) return `${label} ${counts}`.slice(0, width);
  const cells = Math.min(30, room);
  const filled = Math.round((percent / 100) * cells);
  return `${label} ${"█".repeat(filled)}${"░".repeat(cells - filled)} ${counts}`;
}

export interface ProgressOutput {
  readonly isTTY: boolean;
  readonly columns: number;
  /** A synchronous write: the check holds the thread, so anything queued would appear only at its end. */
  write(text: string): void;
}

/** A progress callback for checkDedupStore, and `done()` to leave the terminal's line clean. */
export function checkProgress(out: ProgressOutput, now: () => number = Date.now): { onProgress: (p: CheckProgress) => void; done: () => void } {
  const started = now();
  let last = 0;
  let drawn = false;
  const onProgress = (p: CheckProgress) => {
    const t = now();
    const phaseDone = p.done >= p.total;
    if (out.isTTY) {
      if (t - last < BAR_EVERY_MS && !phaseDone) return;
      out.write(`\r\u001B[K${progressText(p, Math.max(20, out.columns - 1))}`);
      drawn = true;
    } else {
      // A quick check stays quiet; a long one says where it is every few seconds, and when each phase ends.
      const due = t - (last === 0 ? started : last) >= LINE_EVERY_MS;
      if (!due && !(phaseDone && last !== 0)) return;
      out.write(`usbd-tui check: ${progressText(p, 80)}\n`);
    }
    last = t;
  };
  return { onProgress, done: () => drawn && out.write("\r\u001B[K") };
}
