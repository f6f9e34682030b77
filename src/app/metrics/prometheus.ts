/**
 * The daemon's numbers in the Prometheus text exposition format (version 0.0.4): per device the requests, bytes and
 * errors by command, a latency histogram by kind of request, requests in flight, connections, and every gauge the
 * device reports in `stats()`. Pure: `render` takes what to show, so the format is tested without a server.
 */
import type { DeviceGauge } from "../../devices/device.ts";
import type { DeviceSnapshot } from "../../engine/host-types.ts";
import { type LatencyGroup, type LatencyHistogram, latencyBucketCeiling } from "../../engine/metrics.ts";

export interface DeviceMetricsView {
  readonly snapshot: DeviceSnapshot;
  readonly latency: Readonly<Record<LatencyGroup, LatencyHistogram>>;
}

export interface DaemonMetricsView {
  readonly version: string;
  /** Milliseconds since the epoch. */
  readonly startedAt: number;
  readonly devices: readonly DeviceMetricsView[];
}

/** Histogram bounds: powers of two from 1 us to 16.8 s, each the ceiling of one of the engine's latency buckets. */
const BOUNDS_EXPONENTS = Array.from({ length: 25 }, (_, j) => j);

/** The index of the engine bucket whose ceiling is 2^j microseconds (buckets are exact below 4 us, then 4 per octave). */
function bucketIndexOf(j: number): number {
  if (j <= 1) return j;
  if (j === 2) return 3;
  return (j - 1) * 4 + 3;
}

function escapeLabel(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

function labels(pairs: Readonly<Record<string, string>>): string {
  const inner = Object.entries(pairs)
    .map(([k, v]) => `${k}="${escapeLabel(v)}"`)
    .join(",");
  return inner === "" ? "" : `{${inner}}`;
}

function number(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  if (value === Infinity) return "+Inf";
  if (value === -Infinity) return "-Inf";
  return String(value);
}

/** A device gauge's metric name: `dirty objects` in bytes → `usbd_device_dirty_objects_bytes`. */
export function gaugeMetricName(gauge: Pick<DeviceGauge, "name" | "unit">): string {
  const base = `usbd_device_${gauge.name.toLowerCase().replace(/[^a-z0-9]+/g, "_").replace(/^_|_$/g, "")}`;
  const suffix = { bytes: "_bytes", "bytes/s": "_bytes_per_second", ratio: "_ratio", seconds: "_seconds", count: "" }[gauge.unit];
  return suffix === "" || base.endsWith(suffix) ? base : `${base}${suffix}`;
}

class Families {
  private readonly families = new Map<string, { help: string; type: string; lines: string[] }>();

  add(name: string, type: "counter" | "gauge" | "histogram", help: string, line: string): void {
    let family = this.families.get(name);
    if (family === undefined) {
      family = { help, type, lines: [] };
      this.families.set(name, family);
    }
    family.lines.push(line);
  }

  text(): string {
    const out: string[] = [];
    for (const [name, f] of this.families) out.push(`# HELP ${name} ${f.help}`, `# TYPE ${name} ${f.type}`, ...f.lines);
    return `${out.join("\n")}\n`;
  }
}

export function renderPrometheus(view: DaemonMetricsView): string {
  const f = new Families();
  f.add("usbd_build_info", "gauge", "The usbd-tui version serving, as a label.", `usbd_build_info${labels({ version: view.version })} 1`);
  f.add("usbd_start_time_seconds", "gauge", "When the daemon started, in seconds since the epoch.", `usbd_start_time_seconds ${number(view.startedAt / 1000)}`);
  for (const { snapshot: s, latency } of view.devices) {
    const device = { device: s.name };
    f.add("usbd_device_info", "gauge", "A served device: its kind, state and where it is served, as labels.", `usbd_device_info${labels({ ...device, kind: s.kind, state: s.state, served_at: s.servedAt ?? "" })} 1`);
    f.add("usbd_device_size_bytes", "gauge", "The device's size.", `usbd_device_size_bytes${labels(device)} ${s.size}`);
    f.add("usbd_device_up", "gauge", "1 while the device is served, 0 once detached or failed.", `usbd_device_up${labels(device)} ${s.state === "detached" || s.state === "error" ? 0 : 1}`);
    for (const [command, t] of Object.entries(s.metrics.totals)) {
      const l = labels({ ...device, command });
      f.add("usbd_requests_total", "counter", "NBD requests finished, by command.", `usbd_requests_total${l} ${t.ops}`);
      f.add("usbd_request_errors_total", "counter", "NBD requests answered with an error, by command.", `usbd_request_errors_total${l} ${t.errors}`);
      f.add("usbd_request_bytes_total", "counter", "Bytes moved by successful requests, by command (read, write; trim and zeroes count their ranges).", `usbd_request_bytes_total${l} ${t.bytes}`);
    }
    for (const [group, h] of Object.entries(latency)) {
      let cumulative = 0;
      let next = 0;
      for (const j of BOUNDS_EXPONENTS) {
        const last = bucketIndexOf(j);
        for (; next <= last && next < h.counts.length; next++) cumulative += h.counts[next]!;
        const le = latencyBucketCeiling(last) / 1e6;
        f.add("usbd_request_duration_seconds", "histogram", "Time from a request's arrival to its reply, by kind of request.", `usbd_request_duration_seconds_bucket${labels({ ...device, op: group, le: String(le) })} ${cumulative}`);
      }
      const count = h.counts.reduce((a, b) => a + b, 0);
      f.add("usbd_request_duration_seconds", "histogram", "", `usbd_request_duration_seconds_bucket${labels({ ...device, op: group, le: "+Inf" })} ${count}`);
      f.add("usbd_request_duration_seconds", "histogram", "", `usbd_request_duration_seconds_sum${labels({ ...device, op: group })} ${number(h.sumSeconds)}`);
      f.add("usbd_request_duration_seconds", "histogram", "", `usbd_request_duration_seconds_count${labels({ ...device, op: group })} ${count}`);
    }
    f.add("usbd_requests_in_flight", "gauge", "Requests received and not yet answered.", `usbd_requests_in_flight${labels(device)} ${s.metrics.inFlight}`);
    f.add("usbd_connections", "gauge", "Open connections to the device (clients, or the kernel's sockets).", `usbd_connections${labels(device)} ${s.metrics.connections}`);
    f.add("usbd_device_error", "gauge", "1 while the device shows an error (its last error is in the dashboard and ctl status).", `usbd_device_error${labels(device)} ${s.lastError === undefined ? 0 : 1}`);
    for (const g of s.stats?.gauges ?? []) {
      const name = gaugeMetricName(g);
      f.add(name, "gauge", `The ${s.kind} device's "${g.name}" gauge (${g.unit}).`, `${name}${labels(device)} ${number(g.value)}`);
      if (g.max !== undefined) f.add(`${name}_limit`, "gauge", `The most the "${g.name}" gauge can reach.`, `${name}_limit${labels(device)} ${number(g.max)}`);
    }
  }
  return f.text();
}
