/** Numbers for people in the units devices report their gauges in, shared by the stats lines and the dashboard. */
import { formatSize } from "./format-size.ts";

/** The units a device gauge may have (see DeviceGauge in src/devices/device.ts). */
export type GaugeUnit = "bytes" | "bytes/s" | "ratio" | "count" | "seconds";

/** A count in at most 5 characters: `812`, `12.3k`, `1.2M`. */
export function formatCount(n: number): string {
  const value = Math.round(n);
  if (value < 1000) return String(value);
  if (value < 1e6) return `${(value / 1e3).toFixed(value < 1e4 ? 2 : 1).replace(/\.?0+$/, "")}k`;
  return `${(value / 1e6).toFixed(value < 1e7 ? 2 : 1).replace(/\.?0+$/, "")}M`;
}

/** An uptime: `42s`, `3m05s`, `2h03m`, `4d02h`. */
export function formatUptime(seconds: number): string {
  const s = Math.floor(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
  return `${Math.floor(s / 86400)}d${String(Math.floor((s % 86400) / 3600)).padStart(2, "0")}h`;
}

/** A gauge's value in its unit: `12 MiB`, `3 MiB/s`, `5.02x`, `1.23k`, `3m05s`. */
export function formatGaugeValue(value: number, unit: GaugeUnit): string {
  switch (unit) {
    case "bytes":
      return formatSize(Math.round(value));
    case "bytes/s":
      return `${formatSize(Math.round(value))}/s`;
    case "ratio":
      return `${value.toFixed(2)}x`;
    case "seconds":
      return value === 0 ? "-" : formatUptime(value);
    case "count":
      return formatCount(value);
  }
}
