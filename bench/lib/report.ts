/**
 * Turns the raw measurements into medians, paired ratios and Markdown tables, and compares the ratios with the
 * performance targets.
 */
import { JOBS, type Measurement, type Metric } from "./jobs.ts";
import { type DeviceKind, type Group, GROUPS, type Gauges, type ServerName } from "./servers.ts";

/** One job run against one server in one round. */
export interface RecordRow {
  round: number;
  group: DeviceKind;
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
  /** For a server that reports gauges (usbd-dedup): its gauges before the job (after the previous one, or after
   * the prefill) and after it. */
  gaugesBefore?: Gauges;
  gauges?: Gauges;
}

/**
 * A performance target: the usbd/peer ratio against `against` (a peer of the group), or, where `absolute` is set,
 * either that median throughput or the ratio (the issue's "X GB/s, or where the machine cannot, Yx").
 */
export interface Target {
  readonly ratio: number;
  readonly against: ServerName;
  /** In the job's metric: bytes/s or IOPS. */
  readonly absolute?: number;
}

const vs = (against: ServerName, entries: Record<string, number>): Record<string, Target> =>
  Object.fromEntries(Object.entries(entries).map(([job, ratio]) => [job, { ratio, against }]));

/** The issue's targets per job. A job without a target is measured for information. */
export const TARGETS: Record<DeviceKind, Record<string, Target>> = {
  mem: vs("nbdkit-memory", {
    "randread-4k-qd32": 1.5,
    "read-1m-qd8": 1.2,
    nbdcopy: 1.2,
    "randwrite-4k-qd32": 1.2,
    "write-1m-qd8": 1.1,
  }),
  file: vs("nbdkit-file", Object.fromEntries(JOBS.map((j) => [j.name, 1.0]))),
  // Dedup: absolute throughput on this 2-core machine, or 0.7x usbd-tui's mem device in the same run; unique-data
  // writes (write-1m-qd8) at 0.3x of it and 1K writes into an emptied store at 50 MB/s (issue 19).
  dedup: {
    "write-1m-qd8": { ratio: 0.3, against: "usbd-mem" },
    "write-1k-seq-fresh-qd32": { absolute: 50e6, ratio: Number.POSITIVE_INFINITY, against: "usbd-mem" },
    "write-1m-dup-qd8": { absolute: 2.1e9, ratio: 0.7, against: "usbd-mem" },
    "read-1m-qd8": { absolute: 3.2e9, ratio: 0.7, against: "usbd-mem" },
    "randread-4k-qd32": { ratio: 0.7, against: "usbd-mem" },
  },
  // Objstore: warm-cache reads at >= 0.9x usbd-tui's own file device in the same run (issue 15's target; the
  // segment design's issue asked 0.8x).
  objstore: vs("usbd-file", { "randread-4k-qd1": 0.9, "randread-4k-qd32": 0.9, "read-1m-qd8": 0.9, nbdcopy: 0.9 }),
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

export interface PeerSummary {
  server: ServerName;
  summary?: ServerSummary;
  /** usbd/peer per round where both succeeded, and their median, min and max. */
  ratios: number[];
  ratio: number | null;
  ratioMin: number | null;
  ratioMax: number | null;
}

/** A repeated job (JobSpec.repeatOf): one server's rate in it against its rate in the earlier job, per round. */
export interface LateSummary {
  server: ServerName;
  earlier: string;
  ratios: number[];
  ratio: number | null;
  ratioMin: number | null;
  ratioMax: number | null;
}

export interface JobSummary {
  job: string;
  metric: Metric;
  usbd?: ServerSummary;
  peers: PeerSummary[];
  target: Target | null;
  /** Whether the target is met, and by which criterion (the absolute figure or the ratio). */
  met: boolean | null;
  metBy?: "absolute" | "ratio";
  /** Rounds in which any server's job shared the box with other work (other load > NOISY_CORES). */
  noisyRounds: number[];
  /** The usbd server's gauges around the job, per round (where it reports them): a dedup store's... */
  store?: StoreSummary;
  /** ...or an objstore device's cache and transfers. */
  cache?: CacheSummary;
  /** For a repeated job: every server's rate here against the earlier job's. */
  late?: LateSummary[];
}

const spread = (ratios: number[]) => ({
  ratios,
  ratio: ratios.length ? median(ratios) : null,
  ratioMin: ratios.length ? Math.min(...ratios) : null,
  ratioMax: ratios.length ? Math.max(...ratios) : null,
});

/**
 * What an objstore device's cache did during a job, from its gauges (median over rounds): the cache's size after
 * it, dirty objects, and the bytes downloaded from and uploaded to the store during the job. A warm-cache read job
 * downloads and uploads nothing.
 */
export interface CacheSummary {
  rounds: number;
  cacheBytes: number;
  dirtyObjects: number;
  downloadedDelta: number;
  uploadedDelta: number;
  /** Every round: nothing downloaded or uploaded during the job, and nothing dirty after it. */
  warm: boolean;
}

/**
 * What the job did to a dedup store, from its gauges (median over rounds): unique blocks after the job and their
 * change, reclaimable blocks, and the change in "unflushed changes" (map and index entries modified since the
 * prefill's flush). A job that only wrote already-stored data at the same offsets changes none of them.
 */
export interface StoreSummary {
  rounds: number;
  uniqueBlocks: number;
  uniqueDelta: number;
  reclaimable: number;
  unflushedDelta: number;
  dedupRatio: number;
  storeFileBytes: number;
  /** Every round: no new unique block, nothing reclaimable gained, no map or index entry changed. */
  unchanged: boolean;
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

function summarizeStore(rows: RecordRow[]): StoreSummary | undefined {
  const seen = rows.filter((r) => r.gauges && r.gaugesBefore);
  if (seen.length === 0) return undefined;
  const g = (r: RecordRow, which: "gauges" | "gaugesBefore", name: string) => r[which]?.[name] ?? Number.NaN;
  const delta = (r: RecordRow, name: string) => g(r, "gauges", name) - g(r, "gaugesBefore", name);
  const med = (f: (r: RecordRow) => number) => median(seen.map(f));
  return {
    rounds: seen.length,
    uniqueBlocks: med((r) => g(r, "gauges", "unique blocks")),
    uniqueDelta: med((r) => delta(r, "unique blocks")),
    reclaimable: med((r) => g(r, "gauges", "reclaimable blocks")),
    unflushedDelta: med((r) => delta(r, "unflushed changes")),
    dedupRatio: med((r) => g(r, "gauges", "dedup ratio")),
    storeFileBytes: med((r) => g(r, "gauges", "store file")),
    unchanged: seen.every((r) => ["unique blocks", "reclaimable blocks", "unflushed changes"].every((n) => delta(r, n) === 0)),
  };
}

function summarizeCache(rows: RecordRow[]): CacheSummary | undefined {
  const seen = rows.filter((r) => r.gauges && r.gaugesBefore);
  if (seen.length === 0) return undefined;
  const g = (r: RecordRow, which: "gauges" | "gaugesBefore", name: string) => r[which]?.[name] ?? Number.NaN;
  const delta = (r: RecordRow, name: string) => g(r, "gauges", name) - g(r, "gaugesBefore", name);
  const med = (f: (r: RecordRow) => number) => median(seen.map(f));
  return {
    rounds: seen.length,
    cacheBytes: med((r) => g(r, "gauges", "cache")),
    dirtyObjects: med((r) => g(r, "gauges", "dirty objects")),
    downloadedDelta: med((r) => delta(r, "downloaded")),
    uploadedDelta: med((r) => delta(r, "uploaded")),
    warm: seen.every((r) => delta(r, "downloaded") === 0 && delta(r, "uploaded") === 0 && g(r, "gauges", "dirty objects") === 0),
  };
}

export function summarize(rows: RecordRow[], groups: Readonly<Record<DeviceKind, Group>> = GROUPS): Partial<Record<DeviceKind, JobSummary[]>> {
  const out: Partial<Record<DeviceKind, JobSummary[]>> = {};
  for (const group of Object.keys(groups) as DeviceKind[]) {
    const { usbd, peers } = groups[group];
    const jobs: JobSummary[] = [];
    for (const spec of JOBS) {
      const mine = rows.filter((r) => r.group === group && r.job === spec.name);
      if (mine.length === 0) continue;
      const byRound = (server: ServerName) =>
        new Map(mine.filter((r) => r.server === server && r.ok && r.result).map((r) => [r.round, metricOf(spec.metric, r.result!)]));
      const a = byRound(usbd);
      const peerSummaries = peers.map((server): PeerSummary => {
        const b = byRound(server);
        const ratios = [...a.keys()].filter((k) => b.has(k) && b.get(k)! > 0).sort((x, y) => x - y).map((k) => a.get(k)! / b.get(k)!);
        return { server, summary: summarizeServer(mine.filter((r) => r.server === server), spec.metric), ...spread(ratios) };
      });
      const earlier = spec.repeatOf;
      const late =
        earlier === undefined
          ? undefined
          : [usbd, ...peers].map((server): LateSummary => {
              const now = byRound(server);
              const before = new Map(
                rows
                  .filter((r) => r.group === group && r.job === earlier && r.server === server && r.ok && r.result)
                  .map((r) => [r.round, metricOf(spec.metric, r.result!)]),
              );
              const ratios = [...now.keys()].filter((k) => (before.get(k) ?? 0) > 0).sort((x, y) => x - y).map((k) => now.get(k)! / before.get(k)!);
              return { server, earlier, ...spread(ratios) };
            });
      const usbdSummary = summarizeServer(mine.filter((r) => r.server === usbd), spec.metric);
      const target = TARGETS[group][spec.name] ?? null;
      const ratio = target && peerSummaries.find((p) => p.server === target.against)?.ratio;
      const byAbsolute = target?.absolute !== undefined && usbdSummary !== undefined && usbdSummary.median >= target.absolute;
      const byRatio = target !== null && ratio != null && ratio >= target.ratio;
      jobs.push({
        job: spec.name,
        metric: spec.metric,
        usbd: usbdSummary,
        peers: peerSummaries,
        target,
        met: target === null || (ratio == null && !byAbsolute) ? null : byAbsolute || byRatio,
        ...(byAbsolute ? { metBy: "absolute" as const } : byRatio ? { metBy: "ratio" as const } : {}),
        noisyRounds: [...new Set(mine.filter((r) => (r.otherCores ?? 0) > NOISY_CORES).map((r) => r.round))].sort((x, y) => x - y),
        ...(group === "dedup" ? { store: summarizeStore(mine.filter((r) => r.server === usbd)) } : {}),
        ...(group === "objstore" ? { cache: summarizeCache(mine.filter((r) => r.server === usbd)) } : {}),
        ...(late ? { late } : {}),
      });
    }
    if (jobs.length) out[group] = jobs;
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

function fmtTarget(t: Target | null, metric: Metric, peers: readonly ServerName[]): string {
  if (t === null) return "-";
  if (t.absolute !== undefined && !Number.isFinite(t.ratio)) return `>= ${fmtMetric(metric, t.absolute)}`;
  const ratio = `>= ${t.ratio.toFixed(1)}x${peers.length > 1 || peers[0] !== t.against ? ` ${t.against}` : ""}`;
  return t.absolute === undefined ? ratio : `>= ${fmtMetric(metric, t.absolute)} or ${ratio}`;
}

function fmtMet(j: JobSummary): string {
  if (j.met === null) return j.target === null ? "" : "n/a";
  if (!j.met) return "**no**";
  return j.target?.absolute !== undefined && j.metBy ? `yes (${j.metBy})` : "yes";
}

const fmtBytes = (v: number): string => (Number.isFinite(v) ? `${(v / 2 ** 30).toFixed(2)} GiB` : "-");

/** The Markdown report: per device group a results table, a detail table and, for a dedup store, a store table. */
export function markdown(
  summary: Partial<Record<DeviceKind, JobSummary[]>>,
  header: string[],
  groups: Readonly<Record<DeviceKind, Group>> = GROUPS,
): string {
  const lines: string[] = [...header, ""];
  let stores = false;
  let caches = false;
  let lateTable = false;
  for (const group of Object.keys(summary) as DeviceKind[]) {
    const jobs = summary[group] ?? [];
    const { usbd, peers } = groups[group];
    const members = [usbd, ...peers];
    const single = peers.length === 1;
    const row = (cells: string[]) => `| ${cells.join(" | ")} |`;
    lines.push(`#### ${usbd} vs ${peers.join(" and ")}`, "");
    lines.push(
      row([
        "job",
        ...members,
        ...peers.flatMap((p) => (single ? ["ratio (median)", "ratio min-max"] : [`ratio vs ${p} (median)`, "min-max"])),
        "target",
        "met",
      ]),
    );
    lines.push(`|---|${members.map(() => "---:|").join("")}${peers.map(() => "---:|---:|").join("")}---:|:---:|`);
    for (const j of jobs) {
      lines.push(
        row([
          j.job,
          fmtMetric(j.metric, j.usbd?.median),
          ...j.peers.map((p) => fmtMetric(j.metric, p.summary?.median)),
          ...j.peers.flatMap((p) => [f(p.ratio, 2, "x"), `${f(p.ratioMin, 2)}-${f(p.ratioMax, 2)}`]),
          fmtTarget(j.target, j.metric, peers),
          fmtMet(j),
        ]),
      );
    }
    lines.push("");
    lines.push(
      row([
        "job",
        ...members.map((m) => `p99 lat ${m}`),
        ...members.map((m) => `srv CPU ${m}`),
        ...members.map((m) => `srv us/op ${m}`),
        "other load",
        "noisy rounds",
      ]),
    );
    lines.push(`|---|${members.map(() => "---:|---:|---:|").join("")}---:|---:|`);
    for (const j of jobs) {
      const all = [j.usbd, ...j.peers.map((p) => p.summary)];
      lines.push(
        row([
          j.job,
          ...all.map((s) => f(s?.p99LatUs, 0, " us")),
          ...all.map((s) => f(s?.serverCpuPct, 0, "%")),
          ...all.map((s) => f(s?.serverCpuUsPerUnit, 2)),
          f(Math.max(0, ...all.map((s) => s?.otherCores ?? 0)), 2),
          j.noisyRounds.join(",") || "-",
        ]),
      );
    }
    lines.push("");
    const repeated = jobs.filter((j) => j.late);
    if (repeated.length) {
      lateTable = true;
      lines.push(row(["job", "against", ...members.map((m) => `${m} late/earlier (median)`), "min-max per server"]));
      lines.push(`|---|---|${members.map(() => "---:|").join("")}---|`);
      for (const j of repeated) {
        const late = j.late!;
        lines.push(
          row([
            j.job,
            late[0]!.earlier,
            ...late.map((l) => f(l.ratio, 2, "x")),
            late.map((l) => `${f(l.ratioMin, 2)}-${f(l.ratioMax, 2)}`).join(", "),
          ]),
        );
      }
      lines.push("");
    }
    const withStore = jobs.filter((j) => j.store);
    if (withStore.length) {
      stores = true;
      lines.push(
        `| job | ${usbd} unique blocks after | new unique blocks | reclaimable blocks | map/index changes | dedup ratio | store file | store unchanged |`,
        "|---|---:|---:|---:|---:|---:|---:|:---:|",
      );
      for (const j of withStore) {
        const s = j.store!;
        lines.push(
          row([
            j.job,
            f(s.uniqueBlocks, 0),
            f(s.uniqueDelta, 0),
            f(s.reclaimable, 0),
            f(s.unflushedDelta, 0),
            f(s.dedupRatio, 2),
            fmtBytes(s.storeFileBytes),
            s.unchanged ? `yes (${s.rounds} rounds)` : "no",
          ]),
        );
      }
      lines.push("");
    }
    const withCache = jobs.filter((j) => j.cache);
    if (withCache.length) {
      caches = true;
      lines.push(
        `| job | ${usbd} cache after | dirty objects after | downloaded during job | uploaded during job | warm cache |`,
        "|---|---:|---:|---:|---:|:---:|",
      );
      const mib = (v: number) => (Number.isFinite(v) ? `${(v / 2 ** 20).toFixed(0)} MiB` : "-");
      for (const j of withCache) {
        const c = j.cache!;
        lines.push(
          row([
            j.job,
            mib(c.cacheBytes),
            f(c.dirtyObjects, 0),
            mib(c.downloadedDelta),
            mib(c.uploadedDelta),
            c.warm ? `yes (${c.rounds} rounds)` : "no",
          ]),
        );
      }
      lines.push("");
    }
  }
  lines.push(
    "ratio = median over rounds of the paired per-round ratio usbd/peer (IOPS for 4k jobs, bytes/s otherwise); " +
      "min-max = its range over rounds. A target with a throughput is met by that median throughput or by the ratio. " +
      "p99 lat = fio completion latency (write-1m-dup-qd8: the worst of its passes). srv CPU = server process (all threads), " +
      "% of one core over the job. srv us/op = server CPU per request (4k jobs) or per MiB (1M jobs, nbdcopy). " +
      "other load = box CPU (tick-sampled /proc/stat) not used by server or client, in cores (worst of the medians, " +
      "floored at 0; tick sampling under-counts at QD1); noisy rounds = rounds where any server saw > " +
      `${NOISY_CORES} cores of other load (another process competed).` +
      (lateTable
        ? " Late table: a job repeated after the large-block jobs in the same server process, as each server's rate " +
          "there against its own rate in the earlier job of the same round (below 1: the server got slower once it " +
          "had served large requests)."
        : "") +
      (stores
        ? " Store table: the dedup device's own gauges (JSON stats) after each job, medians over rounds; new unique " +
          "blocks and map/index changes (its \"unflushed changes\" gauge; the prefill ended with a flush) are the change " +
          "during the job. store unchanged = in every round the job added no unique block, made nothing reclaimable and " +
          "changed no map or index entry, i.e. every block it wrote was already stored, at that offset."
        : "") +
      (caches
        ? " Cache table: the objstore device's own gauges (JSON stats) after each job, medians over rounds; downloaded " +
          "and uploaded are the change during the job. warm cache = in every round the job fetched nothing from the " +
          "store, uploaded nothing and left nothing dirty: every read was served from the local cache."
        : ""),
  );
  return lines.join("\n");
}
