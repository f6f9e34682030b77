/** The daemon's stats as lines: one human line per device (for a glance at journalctl) or one JSON object. */
import type { DeviceSnapshot } from "../engine/host.ts";
import { formatGaugeValue } from "../shared/format-gauge.ts";

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
  const { history: _history, ...metrics } = s.metrics;
  return JSON.stringify({
    type,
    device: s.name,
    kind: s.kind,
    size: s.size,
    state: s.state,
    servedAt: s.servedAt,
    kernel: s.kernel,
    ...metrics,
    gauges: s.stats?.gauges ?? [],
  });
}
