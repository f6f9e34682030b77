/** `--metrics tcp:HOST:PORT`: an HTTP server on that address whose `/metrics` is the Prometheus text of the daemon. */
import type { Host } from "../../engine/host.ts";
import type { Logger } from "../../shared/log.ts";
import { renderPrometheus } from "./prometheus.ts";

export interface MetricsEndpoint {
  /** `http://127.0.0.1:9101/metrics` (the port the OS chose for port 0). */
  readonly url: string;
  stop(): void;
}

export class MetricsAddressError extends Error {}

/** Parses `tcp:HOST:PORT`, `tcp:PORT` or `tcp:[::1]:PORT` (host defaults to 127.0.0.1, never all interfaces unasked). */
export function parseMetricsAddress(spec: string): { host: string; port: number } {
  const m = /^tcp:(?:(\[[^\]]+\]|[^:]+):)?(\d+)$/.exec(spec);
  if (m === null || Number(m[2]) > 65535) {
    throw new MetricsAddressError(`--metrics takes tcp:HOST:PORT (for example tcp:127.0.0.1:9101), not "${spec}"`);
  }
  return { host: (m[1] ?? "127.0.0.1").replace(/^\[(.*)\]$/, "$1"), port: Number(m[2]) };
}

export function startMetricsEndpoint(spec: string, source: { readonly host: Host; readonly version: string; readonly startedAt: number }, log: Logger): MetricsEndpoint {
  const { host, port } = parseMetricsAddress(spec);
  let server: ReturnType<typeof Bun.serve>;
  try {
    server = Bun.serve({
      hostname: host,
      port,
      fetch(request) {
        const path = new URL(request.url).pathname;
        if (path !== "/metrics") return new Response("usbd-tui serves its metrics at /metrics\n", { status: 404 });
        if (request.method !== "GET" && request.method !== "HEAD") return new Response("GET /metrics\n", { status: 405 });
        const snapshots = source.host.snapshot();
        const text = renderPrometheus({
          version: source.version,
          startedAt: source.startedAt,
          devices: source.host.list().map((d, i) => ({ snapshot: snapshots[i]!, latency: d.metrics.latencyHistograms() })),
        });
        return new Response(text, { headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" } });
      },
    });
  } catch (error) {
    throw new MetricsAddressError(`--metrics ${spec}: cannot listen (${error instanceof Error ? error.message : String(error)}); choose another port`);
  }
  const shown = host.includes(":") ? `[${host}]` : host;
  const url = `http://${shown}:${server.port}/metrics`;
  log.log("info", "metrics served", { url });
  return { url, stop: () => void server.stop(true) };
}
