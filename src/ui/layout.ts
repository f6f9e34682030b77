/**
 * How the dashboard shares the terminal's rows: the selected device gets the full panel first, then the others a
 * compact one, then full ones, and the event pane takes what is left. With more devices than rows, each becomes
 * one line and a window of them around the selected one is shown. Pure, so every terminal size is testable.
 */

export type PanelMode = "full" | "compact" | "line";

/** Rows the header and the footer take. */
export const CHROME_ROWS = 2;
/** The event pane's borders. */
const EVENT_BORDER_ROWS = 2;
/** Event lines the pane keeps even on a small terminal, and the most it grows to. */
const MIN_EVENT_LINES = 1;
const MAX_EVENT_LINES = 50;
/** A compact panel: borders, the read line and the write line. */
export const COMPACT_ROWS = 4;
/** A full panel without its gauges: borders, read, write and the latency line. */
export const FULL_BASE_ROWS = 5;

export interface LayoutInput {
  readonly rows: number;
  /** Rows each device's full panel needs (FULL_BASE_ROWS plus its gauge and error lines). */
  readonly fullRows: readonly number[];
  readonly selected: number;
  /** Rows something else needs first (a question's box), taken before any panel grows. */
  readonly reserved?: number;
}

export interface Layout {
  /** One mode per shown device, in order. */
  readonly modes: readonly PanelMode[];
  /** The shown devices are indexes first..first+modes.length-1. */
  readonly first: number;
  /** Devices not shown (when there are more than rows): a "+N more" line says so. */
  readonly hidden: number;
  readonly eventLines: number;
}

const cost: Record<PanelMode, (full: number) => number> = {
  line: () => 1,
  compact: () => COMPACT_ROWS,
  full: (full) => full,
};

/** Indexes starting at `selected` and moving outwards: the panels nearest the selection grow first. */
function outward(selected: number, count: number): number[] {
  const order = [selected];
  for (let d = 1; order.length < count; d++) {
    if (selected - d >= 0) order.push(selected - d);
    if (selected + d < count) order.push(selected + d);
  }
  return order;
}

export function layout(input: LayoutInput): Layout {
  const count = input.fullRows.length;
  const selected = Math.min(Math.max(0, input.selected), Math.max(0, count - 1));
  const budget = input.rows - CHROME_ROWS - EVENT_BORDER_ROWS - MIN_EVENT_LINES - (input.reserved ?? 0);
  if (count === 0) return { modes: [], first: 0, hidden: 0, eventLines: clampEvents(budget + MIN_EVENT_LINES) };

  if (count > budget) {
    // One line each, a window around the selection, and one line that counts the rest.
    const shown = Math.max(1, budget - 1);
    const first = Math.min(Math.max(0, selected - Math.floor(shown / 2)), count - shown);
    return { modes: new Array<PanelMode>(shown).fill("line"), first, hidden: count - shown, eventLines: MIN_EVENT_LINES };
  }

  const modes = new Array<PanelMode>(count).fill("line");
  let left = budget - count;
  const upgrade = (i: number, to: PanelMode): void => {
    const extra = cost[to](input.fullRows[i]!) - cost[modes[i]!](input.fullRows[i]!);
    if (extra > 0 && extra <= left) {
      modes[i] = to;
      left -= extra;
    }
  };
  const order = outward(selected, count);
  upgrade(selected, "full");
  if (modes[selected] === "line") upgrade(selected, "compact");
  for (const i of order) upgrade(i, "compact");
  for (const i of order) upgrade(i, "full");
  return { modes, first: 0, hidden: 0, eventLines: clampEvents(MIN_EVENT_LINES + left) };
}

function clampEvents(lines: number): number {
  return Math.min(MAX_EVENT_LINES, Math.max(MIN_EVENT_LINES, lines));
}
