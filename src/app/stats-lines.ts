/** The daemon's stats as lines: one human line per device (for a glance at journalctl) or one JSON object. */
import type { DeviceSnapshot } from "../engine/host.ts";
import { formatCount, formatGaugeValue } from "../shared/format-gauge.ts";

function formatRate(bytesPerSecond: number): string {
  return `${(bytesPerSecond / 1e6).toFixed(1)} MB/s`;
}

export function statsLine(s: DeviceSnapshot): string {
  const m = s.metrics;
  const gauges = (s.stats?.gauges ?? []).map((g) => `${g.name} ${formatGaugeValue(g.value, g.unit)}`).join(", ");
  return (
    `stats ${s.name}: read ${m.readIops.toFixed(0)} IOPS ${formatRate(m.readBytesPerSecond)}, ` +
    `write ${m.writeIops.toFixed(0)} IOPS ${formatRate(m.writeBytesPerSecond)}, ` +
    `p50 ${m.latencyP50Micros.toFixed(0)} us, p99 ${m.latencyP99Micros.toFixed(0)} us, ` +
    `in-flight ${m.inFlight}, connections ${m.connections}${gauges ? `, ${gauges}` : ""}`
  );
}

/** One JSON object per device: the metrics snapshot without its 60-second history. */
export function statsJson(type: "stats" | "final", s: DeviceSnapshot): string {
  return JSON.stringify(statsObject(type, s));
}

/** The object a JSON stats line holds (`ctl stats` and `ctl status` carry the same). */
export function statsObject(type: "stats" | "final" | "status", s: DeviceSnapshot): Record<string, unknown> & { readonly device: string; readonly state: DeviceSnapshot["state"] } {
  const { history: _history, ...metrics } = s.metrics;
  return {
    type,
    device: s.name,
    kind: s.kind,
    size: s.size,
    state: s.state,
    servedAt: s.servedAt,
    kernel: s.kernel,
    ...metrics,
    gauges: s.stats?.gauges ?? [],
  };
}

/** One line for systemd's STATUS= (what `systemctl status` shows): `serving 2 devices: R 1.2k W 300 IOPS, 45.1 MB/s, 3 clients`. */
export function serviceStatus(snapshots: readonly DeviceSnapshot[]): string {
  const live = snapshots.filter((s) => s.state !== "detached" && s.state !== "error");
  const sum = (pick: (s: DeviceSnapshot) => number) => live.reduce((acc, s) => acc + pick(s), 0);
  const clients = sum((s) => s.clients.length);
  const errors = snapshots.filter((s) => s.lastError !== undefined).map((s) => `${s.name}: ${s.lastError}`);
  return (
    `serving ${live.length} device${live.length === 1 ? "" : "s"}: R ${formatCount(sum((s) => s.metrics.readIops))} W ${formatCount(sum((s) => s.metrics.writeIops))} IOPS, ` +
    `${formatRate(sum((s) => s.metrics.readBytesPerSecond + s.metrics.writeBytesPerSecond))}, ${clients} client${clients === 1 ? "" : "s"}` +
    (errors.length > 0 ? `; error ${errors[0]}` : "")
  );
}
