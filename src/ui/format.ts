/**
 * Text the dashboard shows: numbers in the width a panel has, sparklines and bars. Pure functions, so the
 * formatting is tested without a terminal.
 */
import type { DeviceGauge } from "../devices/device.ts";
import { formatGaugeValue } from "../shared/format-gauge.ts";
import { fit, textWidth } from "./text.ts";

const SPARKS = "▁▂▃▄▅▆▇█";

/** Bytes per second in MB/s, the unit fio and nbdkit report. */
export function formatRate(bytesPerSecond: number): string {
  const mb = bytesPerSecond / 1e6;
  return `${mb >= 100 ? mb.toFixed(0) : mb.toFixed(1)} MB/s`;
}

/** A latency given in microseconds: `45 us`, `1.2 ms`, `3.4 s`. */
export function formatMicros(micros: number): string {
  if (micros < 1000) return `${Math.round(micros)} us`;
  if (micros < 1e6) return `${(micros / 1000).toFixed(micros < 1e4 ? 1 : 0)} ms`;
  return `${(micros / 1e6).toFixed(1)} s`;
}

/** Milliseconds as an action's duration: `3.1 ms`, `1.25 s`; never negative. */
export function formatMillis(ms: number): string {
  const value = Math.max(0, ms);
  return value < 1000 ? `${value.toFixed(1)} ms` : `${(value / 1000).toFixed(2)} s`;
}

/** A wall-clock time for the event pane: `15:04:05`. */
export function formatClock(epochMs: number): string {
  const d = new Date(epochMs);
  return [d.getHours(), d.getMinutes(), d.getSeconds()].map((n) => String(n).padStart(2, "0")).join(":");
}

/**
 * The last `width` values as block characters, scaled to the largest of them; all zeros (or no values) give a
 * flat baseline, so an idle device reads as idle rather than as noise.
 */
export function sparkline(values: readonly number[], width: number): string {
  if (width <= 0) return "";
  const shown = values.slice(-width);
  const padded = [...new Array<number>(Math.max(0, width - shown.length)).fill(0), ...shown];
  const max = Math.max(...padded);
  if (max <= 0) return SPARKS[0]!.repeat(width);
  return padded.map((v) => (v <= 0 ? SPARKS[0]! : SPARKS[Math.min(SPARKS.length - 1, Math.ceil((v / max) * SPARKS.length) - 1)]!)).join("");
}

/** The value a sparkline of the last `width` values reaches at its full height: its scale. */
export function sparklinePeak(values: readonly number[], width: number): number {
  return width <= 0 ? 0 : Math.max(0, ...values.slice(-width));
}

/** A bar of `width` cells filled to `fraction` (clamped to 0..1): `█████░░░░░`. */
export function bar(fraction: number, width: number): string {
  if (width <= 0) return "";
  const f = Number.isFinite(fraction) ? Math.min(1, Math.max(0, fraction)) : 0;
  const filled = Math.round(f * width);
  return "█".repeat(filled) + "░".repeat(width - filled);
}

/**
 * One gauge in `width` columns: `dedup ratio 5.02x`, or with a maximum `cache ████░░ 12 MiB/64 MiB` where the
 * bar takes the room that is left.
 */
export function formatGauge(gauge: DeviceGauge, width: number): string {
  const value = formatGaugeValue(gauge.value, gauge.unit);
  if (gauge.max === undefined || gauge.max <= 0) return fit(`${gauge.name} ${value}`, width);
  const numbers = `${value}/${formatGaugeValue(gauge.max, gauge.unit)}`;
  const room = width - textWidth(gauge.name) - textWidth(numbers) - 2;
  if (room < 4) return fit(`${gauge.name} ${numbers}`, width);
  return `${gauge.name} ${bar(gauge.value / gauge.max, Math.min(room, 20))} ${numbers}`;
}
