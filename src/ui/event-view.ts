/**
 * Which events the event pane and the full log view show, and how each reads: pure, so scrolling is tested
 * without a terminal. The view either follows the newest events or is anchored at one (after PgUp), and then
 * stays put while new events arrive.
 */
import type { HostEvent } from "../engine/host-types.ts";
import { formatClock } from "./format.ts";
import { fit, padEnd, textWidth, wrap } from "./text.ts";

/** Following the newest events, or anchored so that the event numbered `lastSeq` is the last one shown. */
export type EventScroll = { readonly kind: "follow" } | { readonly kind: "anchored"; readonly lastSeq: number };

export interface EventWindow {
  readonly shown: readonly HostEvent[];
  /** Events before the first one shown (PgUp shows them). */
  readonly older: number;
  /** Events after the last one shown (PgDn shows them). */
  readonly newer: number;
}

export function eventWindow(events: readonly HostEvent[], scroll: EventScroll, lines: number): EventWindow {
  const end = scroll.kind === "follow" ? events.length : events.filter((e) => e.seq <= scroll.lastSeq).length;
  const start = Math.max(0, end - Math.max(0, lines));
  return { shown: events.slice(start, end), older: start, newer: events.length - end };
}

/** One page further back (`direction` -1) or forward (+1); forward past the newest follows again. */
export function scrollEvents(events: readonly HostEvent[], scroll: EventScroll, lines: number, direction: -1 | 1): EventScroll {
  if (events.length === 0) return { kind: "follow" };
  const end = scroll.kind === "follow" ? events.length : events.filter((e) => e.seq <= scroll.lastSeq).length;
  const page = Math.max(1, lines);
  const next = direction < 0 ? Math.max(Math.min(page, events.length), end - page) : end + page;
  if (next >= events.length) return { kind: "follow" };
  return { kind: "anchored", lastSeq: events[next - 1]!.seq };
}

/** The device column's width: the longest name shown, at most 12. */
export function nameWidth(events: readonly HostEvent[]): number {
  return Math.min(12, Math.max(1, ...events.map((e) => textWidth(e.device))));
}

/** `15:04:05 busy   flush done in 3.1 ms`, cut to `width`; events of the daemon as a whole show `·`. */
export function eventLine(e: HostEvent, names: number, width: number): string {
  return fit(`${formatClock(e.time)} ${padEnd(fit(e.device === "" ? "·" : e.device, names), names)} ${e.message}`, width);
}

/** The same, wrapped onto as many lines as it needs (the full log view), continuation lines indented. */
export function eventLinesWrapped(e: HostEvent, names: number, width: number): string[] {
  const prefix = `${formatClock(e.time)} ${padEnd(fit(e.device === "" ? "·" : e.device, names), names)} `;
  const indent = textWidth(prefix);
  return wrap(e.message, Math.max(10, width - indent)).map((line, i) => (i === 0 ? prefix : " ".repeat(indent)) + line);
}
