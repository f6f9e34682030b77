/**
 * The text of a device panel, computed from a snapshot: the title, the read/write lines with their sparklines and
 * scale, the latency line, the device's own gauges (whatever the device reports in `stats()`) and its last error.
 * The components only colour these segments, so what a panel says is tested here without a terminal.
 */
import type { DeviceSnapshot } from "../engine/host-types.ts";
import { formatCount } from "../shared/format-gauge.ts";
import { formatSize } from "../shared/format-size.ts";
import { formatGauge, formatMicros, formatMillis, formatRate, sparkline, sparklinePeak } from "./format.ts";
import { FULL_BASE_ROWS } from "./layout.ts";
import { fit, padEnd, padStart, textWidth, wrap } from "./text.ts";

export type Tone = "read" | "write" | "error" | "warn" | "accent" | "dim";

export interface Segment {
  readonly text: string;
  readonly tone?: Tone;
}

export type Line = readonly Segment[];

/** Columns a panel's border and padding take from the terminal width. */
export const PANEL_FRAME_COLUMNS = 4;
/** Widest sparkline: the 60 seconds of history the metrics keep. */
const MAX_SPARK = 60;
/** Below this inner width the gauges take one column, above it two. */
const TWO_COLUMN_WIDTH = 64;
/** An error is wrapped onto at most this many lines, so its cause shows and the panel stays bounded. */
const MAX_ERROR_LINES = 3;

function where(s: DeviceSnapshot): string {
  if (s.kernel !== undefined) {
    const conns = `${s.kernel.connections} conn${s.kernel.connections === 1 ? "" : "s"}`;
    return `${s.kernel.path} (${s.kernel.interface}, ${conns}${s.kernel.connected ? "" : ", disconnected"})`;
  }
  return s.servedAt ?? "not served yet";
}

/** The state, or the running action with how long it has run: `flushing 3.1 ms…`. */
export function stateText(s: DeviceSnapshot): string {
  return s.activity === undefined ? s.state : `${s.activity.label} ${formatMillis(s.activity.elapsedMs)}…`;
}

/** `fast · mem · 256 MiB · serving · nbd+unix:///fast?socket=/tmp/usbd.sock`. */
export function panelTitle(s: DeviceSnapshot): string {
  return `${s.name} · ${s.kind} · ${formatSize(s.size)} · ${stateText(s)} · ${where(s)}`;
}

/**
 * `W 27.6k IOPS   113 MB/s  ▁▂▄██▇ 31.2k`: the rate now, then the last seconds' ops per second scaled to the
 * number at its end (the peak of what the sparkline shows).
 */
function rateLine(letter: "R" | "W", iops: number, bytesPerSecond: number, history: readonly number[], width: number): Line {
  const numbers = `${letter} ${padStart(formatCount(iops), 5)} IOPS ${padStart(formatRate(bytesPerSecond), 10)}  `;
  const tone: Tone = letter === "R" ? "read" : "write";
  const room = Math.min(MAX_SPARK, width - textWidth(numbers) - 7);
  if (room < 4) return [{ text: fit(numbers.trimEnd(), width), tone }];
  const scale = ` ${padStart(formatCount(sparklinePeak(history, room)), 5)}`;
  return [{ text: numbers, tone }, { text: sparkline(history, room), tone }, { text: scale, tone: "dim" }];
}

export function readLine(s: DeviceSnapshot, width: number): Line {
  const m = s.metrics;
  return rateLine("R", m.readIops, m.readBytesPerSecond, m.history.map((h) => h.readOps), width);
}

export function writeLine(s: DeviceSnapshot, width: number): Line {
  const m = s.metrics;
  return rateLine("W", m.writeIops, m.writeBytesPerSecond, m.history.map((h) => h.writeOps), width);
}

/** Latency, queue and counters: `p50 45 us · p99 1.2 ms · in-flight 3 · conns 1 · flushes 12 · trims 0 · errors 0`. */
export function latencyLine(s: DeviceSnapshot, width: number): Line {
  const m = s.metrics;
  const errors = Object.values(m.totals).reduce((sum, t) => sum + t.errors, 0);
  const parts = [
    `p50 ${formatMicros(m.latencyP50Micros)}`,
    `p99 ${formatMicros(m.latencyP99Micros)}`,
    `in-flight ${m.inFlight}`,
    `conns ${m.connections}`,
    `flushes ${formatCount(m.totals.flush?.ops ?? 0)}`,
    `trims ${formatCount((m.totals.trim?.ops ?? 0) + (m.totals.write_zeroes?.ops ?? 0))}`,
  ];
  const text = fit(parts.join(" · "), width);
  if (errors === 0) return [{ text }];
  const tail = ` · errors ${formatCount(errors)}`;
  return [{ text: fit(parts.join(" · "), Math.max(0, width - textWidth(tail))) }, { text: tail, tone: "error" }];
}

/** The device's own gauges, one or two to a line. */
export function gaugeLines(s: DeviceSnapshot, width: number): string[] {
  const gauges = s.stats?.gauges ?? [];
  if (gauges.length === 0) return [];
  if (width < TWO_COLUMN_WIDTH) return gauges.map((g) => formatGauge(g, width));
  const column = Math.floor((width - 3) / 2);
  const lines: string[] = [];
  for (let i = 0; i < gauges.length; i += 2) {
    const left = padEnd(formatGauge(gauges[i]!, column), column);
    const right = gauges[i + 1] === undefined ? "" : formatGauge(gauges[i + 1]!, column);
    lines.push(`${left}   ${right}`.trimEnd());
  }
  return lines;
}

/** The error a panel shows (see DeviceSnapshot.lastError); a device in the error state says so even without one. */
export function panelError(s: DeviceSnapshot): string | undefined {
  return s.lastError ?? (s.state === "error" ? "failed" : undefined);
}

/** The error wrapped to the panel's width, on up to three lines, so the cause at its end is seen. */
export function errorLines(s: DeviceSnapshot, width: number): string[] {
  const error = panelError(s);
  return error === undefined ? [] : wrap(`error: ${error}`, width, MAX_ERROR_LINES);
}

/** Rows the full panel needs at this width. */
export function fullPanelRows(s: DeviceSnapshot, width: number): number {
  return FULL_BASE_ROWS + gaugeLines(s, width).length + errorLines(s, width).length;
}

/** A device in one row, for terminals with more devices than room: `▶ fast serving R 1.2k W 0 IOPS 4.8 MB/s`. */
export function deviceRow(s: DeviceSnapshot, selected: boolean, width: number): string {
  const m = s.metrics;
  const rate = formatRate(m.readBytesPerSecond + m.writeBytesPerSecond);
  return fit(`${selected ? "▶" : " "} ${s.name} · ${stateText(s)} · R ${formatCount(m.readIops)} W ${formatCount(m.writeIops)} IOPS · ${rate} · ${where(s)}`, width);
}
