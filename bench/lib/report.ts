/**
 * Turns the raw measurements into medians, paired ratios and Markdown tables, and compares the ratios with the
 * performance targets.
 */
import { JOBS, type Measurement, type Metric } from "./jobs.ts";
import { type DeviceKind, PAIRS, type ServerName } from "./servers.ts";

/** One job run against one server in one round. */
export interface RecordRow {
  round: number;
  pair: DeviceKind;
  server: ServerName;
  job: string;
  /** Position within the pair for this job in this round (0 = ran first). */
  order: number;
  startedAt: string;
  wallS: number;
  ok: boolean;
  error?: string;
  result?: Measurement;
  /** Server process CPU (all threads) as a percentage of one core over the job's wall time. */
  serverCpuPct?: number;
  /** Cores busy on the whole box, per CPU, and steal, over the job's wall time. */
  boxCores?: number;
  perCpuCores?: number[];
  stealCores?: number;
  /** Box load not explained by the server and the client (other processes): cores. */
  otherCores?: number;
  gate?: { waited: number; load: number };
}

/** The issue's targets: usbd/nbdkit ratio per job. A job without a target is measured for information. */
export const TARGETS: Record<DeviceKind, Record<string, number>> = {
  mem: {
    "randread-4k-qd32": 1.5,
    "read-1m-qd8": 1.2,
    nbdcopy: 1.2,
    "randwrite-4k-qd32": 1.2,
    "write-1m-qd8": 1.1,
  },
  file: Object.fromEntries(JOBS.map((j) => [j.name, 1.0])),
};

export function median(xs: readonly number[]): number {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return Number.NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function metricOf(metric: Metric, m: Measurement): number {
  return metric === "iops" ? m.iops : m.bw;
}

export interface ServerSummary {
  rounds: number;
  median: number;
  perRound: number[];
  p99LatUs: number | null;
  meanLatUs: number | null;
  serverCpuPct: number;
  /** Server CPU microseconds per request (4k jobs) or per MiB transferred (1M jobs, nbdcopy). */
  serverCpuUsPerUnit: number;
  clientCpuPct: number;
  otherCores: number;
}

export interface JobSummary {
  job: string;
  metric: Metric;
  usbd?: ServerSummary;
  peer?: ServerSummary;
  /** usbd/peer per round where both succeeded, and their median, min and max. */
  ratios: number[];
  ratio: number | null;
  ratioMin: number | null;
  ratioMax: number | null;
  target: number | null;
  met: boolean | null;
  /** Rounds in which either side's job shared the box with other work (other load > NOISY_CORES). */
  noisyRounds: number[];
}

export const NOISY_CORES = 0.15;

function summarizeServer(rows: RecordRow[], metric: Metric): ServerSummary | undefined {
  const ok = rows.filter((r) => r.ok && r.result);
  if (ok.length === 0) return undefined;
  const vals = ok.map((r) => metricOf(metric, r.result!));
  const units = (r: RecordRow) => (metric === "iops" ? r.result!.iops : r.result!.bw / 2 ** 20);
  const nullable = (xs: (number | null)[]) => {
    const v = xs.filter((x): x is number => x != null);
    return v.length ? median(v) : null;
  };
  return {
    rounds: ok.length,
    median: median(vals),
    perRound: vals,
    p99LatUs: nullable(ok.map((r) => r.result!.p99LatUs)),
    meanLatUs: nullable(ok.map((r) => r.result!.meanLatUs)),
    serverCpuPct: median(ok.map((r) => r.serverCpuPct ?? Number.NaN)),
    serverCpuUsPerUnit: median(ok.map((r) => ((r.serverCpuPct ?? Number.NaN) / 100) * 1e6 / units(r))),
    clientCpuPct: median(ok.map((r) => r.result!.clientCpuPct)),
    otherCores: median(ok.map((r) => r.otherCores ?? Number.NaN)),
  };
}

export function summarize(rows: RecordRow[]): Record<DeviceKind, JobSummary[]> {
  const out = {} as Record<DeviceKind, JobSummary[]>;
  for (const pair of Object.keys(PAIRS) as DeviceKind[]) {
    const { usbd, peer } = PAIRS[pair];
    const jobs: JobSummary[] = [];
    for (const spec of JOBS) {
      const mine = rows.filter((r) => r.pair === pair && r.job === spec.name);
      if (mine.length === 0) continue;
      const byRound = (server: ServerName) =>
        new Map(mine.filter((r) => r.server === server && r.ok && r.result).map((r) => [r.round, metricOf(spec.metric, r.result!)]));
      const a = byRound(usbd);
      const b = byRound(peer);
      const ratios = [...a.keys()].filter((k) => b.has(k) && b.get(k)! > 0).sort((x, y) => x - y).map((k) => a.get(k)! / b.get(k)!);
      const ratio = ratios.length ? median(ratios) : null;
      const target = TARGETS[pair][spec.name] ?? null;
      jobs.push({
        job: spec.name,
        metric: spec.metric,
        usbd: summarizeServer(mine.filter((r) => r.server === usbd), spec.metric),
        peer: summarizeServer(mine.filter((r) => r.server === peer), spec.metric),
        ratios,
        ratio,
        ratioMin: ratios.length ? Math.min(...ratios) : null,
        ratioMax: ratios.length ? Math.max(...ratios) : null,
        target,
        met: target === null || ratio === null ? null : ratio >= target,
        noisyRounds: [...new Set(mine.filter((r) => (r.otherCores ?? 0) > NOISY_CORES).map((r) => r.round))].sort((x, y) => x - y),
      });
    }
    if (jobs.length) out[pair] = jobs;
  }
  return out;
}

function fmtMetric(metric: Metric, v: number | undefined): string {
  if (v === undefined || !Number.isFinite(v)) return "failed";
  if (metric === "iops") return v >= 1e4 ? `${(v / 1000).toFixed(1)}k IOPS` : `${(v / 1000).toFixed(2)}k IOPS`;
  return `${(v / 1e9).toFixed(2)} GB/s`;
}

const f = (v: number | null | undefined, digits: number, suffix = ""): string =>
  v == null || !Number.isFinite(v) ? "-" : `${v.toFixed(digits)}${suffix}`;

/** The Markdown report: one results table and one detail table per device pair. */
export function markdown(summary: Record<DeviceKind, JobSummary[]>, header: string[]): string {
  const lines: string[] = [...header, ""];
  for (const pair of Object.keys(summary) as DeviceKind[]) {
    const { usbd, peer } = PAIRS[pair];
    lines.push(`#### ${usbd} vs ${peer}`, "");
    lines.push(`| job | ${usbd} | ${peer} | ratio (median) | ratio min-max | target | met |`);
    lines.push("|---|---:|---:|---:|---:|---:|:---:|");
    for (const j of summary[pair]) {
      const met = j.met === null ? (j.target === null ? "" : "n/a") : j.met ? "yes" : "**no**";
      lines.push(
        `| ${j.job} | ${fmtMetric(j.metric, j.usbd?.median)} | ${fmtMetric(j.metric, j.peer?.median)} | ` +
          `${f(j.ratio, 2, "x")} | ${f(j.ratioMin, 2)}-${f(j.ratioMax, 2)} | ${j.target === null ? "-" : `>= ${j.target.toFixed(1)}x`} | ${met} |`,
      );
    }
    lines.push("");
    lines.push(
      `| job | p99 lat ${usbd} | p99 lat ${peer} | srv CPU ${usbd} | srv CPU ${peer} | srv us/op ${usbd} | srv us/op ${peer} | other load | noisy rounds |`,
    );
    lines.push("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (const j of summary[pair]) {
      lines.push(
        `| ${j.job} | ${f(j.usbd?.p99LatUs, 0, " us")} | ${f(j.peer?.p99LatUs, 0, " us")} | ${f(j.usbd?.serverCpuPct, 0, "%")} | ` +
          `${f(j.peer?.serverCpuPct, 0, "%")} | ${f(j.usbd?.serverCpuUsPerUnit, 2)} | ${f(j.peer?.serverCpuUsPerUnit, 2)} | ` +
          `${f(Math.max(0, j.usbd?.otherCores ?? 0, j.peer?.otherCores ?? 0), 2)} | ${j.noisyRounds.join(",") || "-"} |`,
      );
    }
    lines.push("");
  }
  lines.push(
    "ratio = median over rounds of the paired per-round ratio usbd/nbdkit (IOPS for 4k jobs, bytes/s otherwise); " +
      "min-max = its range over rounds. p99 lat = fio completion latency. srv CPU = server process (all threads), " +
      "% of one core over the job. srv us/op = server CPU per request (4k jobs) or per MiB (1M jobs, nbdcopy). " +
      "other load = box CPU (tick-sampled /proc/stat) not used by server or client, in cores (worst of the two medians, " +
      "floored at 0; tick sampling under-counts at QD1); noisy rounds = rounds where either side saw > " +
      `${NOISY_CORES} cores of other load (another process competed).`,
  );
  return lines.join("\n");
}
