/**
 * The benchmark jobs: fio with its nbd engine (one libnbd connection per job) and an nbdcopy read of the whole
 * export. Each returns one measurement; the caller brackets it with CPU accounting.
 */
import { readFileSync } from "node:fs";
import type { DeviceKind } from "./servers.ts";
import { type RunResult, run } from "./sys.ts";

export type Metric = "iops" | "bw";

export interface JobSpec {
  readonly name: string;
  readonly title: string;
  /** What the ratio is computed on: IOPS for 4k jobs, bytes/s for large transfers. */
  readonly metric: Metric;
  readonly fio?: { readonly rw: string; readonly bs: string; readonly qd: number };
  readonly copy?: true;
  /**
   * Writes the prefill's content again, the same bytes at the same offsets (see FIXED_CONTENT): data a dedup
   * device already stores. Run as whole passes over the export rather than time based (see runRewrite).
   */
  readonly rewrite?: true;
  /** Runs on an emptied export: one trim of all of it first (a dedup store then holds nothing, as a fresh one). */
  readonly fresh?: true;
  /**
   * The same work as the job of this name, run again after the large-block jobs in the same server process: the
   * report gives each server's rate here against its rate in that earlier job (a server that slows down once it
   * has served large requests shows a ratio below 1).
   */
  readonly repeatOf?: string;
  /** The device kinds that run this job when --jobs does not choose (default: all). */
  readonly kinds?: readonly DeviceKind[];
}

/** How the prefill writes: the rewrite job must use the same request size to reproduce the prefill's content. */
const PREFILL = { rw: "write", bs: "1M", qd: 8 } as const;

/**
 * In run order: reads first (on the prefilled export), then the rewrite of the prefill's content (which leaves the
 * export as it was), then writes of new data. The objstore device runs the reads only (its warm-cache target). fio's default buffers, which the other write jobs use, are scrambled
 * on every write (offset and time stamped into each 512-byte sector), so to a dedup device every block they write is
 * new.
 */
export const JOBS: readonly JobSpec[] = [
  { name: "randread-4k-qd1", title: "4k random read, QD1", metric: "iops", fio: { rw: "randread", bs: "4k", qd: 1 }, kinds: ["mem", "file", "objstore"] },
  { name: "randread-4k-qd32", title: "4k random read, QD32", metric: "iops", fio: { rw: "randread", bs: "4k", qd: 32 } },
  { name: "read-1m-qd8", title: "1M sequential read, QD8", metric: "bw", fio: { rw: "read", bs: "1M", qd: 8 } },
  { name: "nbdcopy", title: "nbdcopy URI null:", metric: "bw", copy: true, kinds: ["mem", "file", "objstore"] },
  {
    name: "write-1m-dup-qd8",
    title: "1M sequential write of already-stored data, QD8",
    metric: "bw",
    fio: PREFILL,
    rewrite: true,
    kinds: ["dedup"],
  },
  { name: "randwrite-4k-qd1", title: "4k random write, QD1", metric: "iops", fio: { rw: "randwrite", bs: "4k", qd: 1 }, kinds: ["mem", "file"] },
  { name: "randwrite-4k-qd32", title: "4k random write, QD32", metric: "iops", fio: { rw: "randwrite", bs: "4k", qd: 32 }, kinds: ["mem", "file"] },
  {
    name: "write-1m-qd8",
    title: "1M sequential write (new data), QD8",
    metric: "bw",
    fio: { rw: "write", bs: "1M", qd: 8 },
    kinds: ["mem", "file", "dedup"],
  },
  // The 4k QD32 jobs again, now that the server has served 1M reads, an nbdcopy and 1M writes (issue 19).
  {
    name: "randread-4k-qd32-late",
    title: "4k random read, QD32, after the large jobs",
    metric: "iops",
    fio: { rw: "randread", bs: "4k", qd: 32 },
    repeatOf: "randread-4k-qd32",
    kinds: ["mem", "file"],
  },
  {
    name: "randwrite-4k-qd32-late",
    title: "4k random write, QD32, after the large jobs",
    metric: "iops",
    fio: { rw: "randwrite", bs: "4k", qd: 32 },
    repeatOf: "randwrite-4k-qd32",
    kinds: ["mem", "file"],
  },
  // Last: its trim of the whole export would change what the jobs after it write into.
  {
    name: "write-1k-seq-fresh-qd32",
    title: "1K sequential write into an emptied export, QD32",
    metric: "bw",
    fio: { rw: "write", bs: "1k", qd: 32 },
    fresh: true,
    kinds: ["dedup"],
  },
];

/** The jobs a device kind runs by default. */
export function defaultJobs(kind: DeviceKind): JobSpec[] {
  return JOBS.filter((j) => j.kinds === undefined || j.kinds.includes(kind));
}

/**
 * fio options for content that is the same on every run: each write gets fresh random data (refill_buffers), drawn
 * from a generator seeded by a fixed randseed, so a job that writes the export once, from the start, in 1M requests,
 * writes the same bytes at the same offsets every time (the 4 KiB blocks all differ and are incompressible). fio
 * does not re-seed when a time-based job wraps or a job loops (checked with the dedup device: the second pass
 * wrote new blocks), so such content is only reproduced by whole single passes from offset 0. Generating it costs
 * the client CPU, and fio sends nothing while it fills a buffer, so this client is slower than the plain write
 * job's (nbdkit-memory's figure for the rewrite job shows its ceiling in the same run).
 */
const FIXED_CONTENT = ["--refill_buffers", "--randrepeat=1", "--randseed=20261125"] as const;

export interface Measurement {
  iops: number;
  /** Bytes per second. */
  bw: number;
  meanLatUs: number | null;
  p99LatUs: number | null;
  /** Client CPU as a percentage of one core over the measured period. */
  clientCpuPct: number;
  /** Extra facts (nbdcopy repetitions...). */
  detail?: Record<string, unknown>;
}

export interface JobContext {
  readonly uri: string;
  readonly sizeBytes: number;
  readonly runtimeS: number;
  readonly rampS: number;
  /** Command prefix for the client (CPU policy). */
  readonly pin: readonly string[];
  /** Where fio writes its JSON output. */
  readonly outFile: string;
}

/** The part of fio's JSON output (one direction of one job) that the harness reads. */
interface FioDirection {
  readonly io_bytes: number;
  readonly iops: number;
  readonly bw_bytes: number;
  /** Milliseconds. */
  readonly runtime: number;
  readonly total_ios: number;
  readonly lat_ns?: { readonly mean?: number };
  readonly clat_ns?: { readonly percentile?: Readonly<Record<string, number>> };
}

interface FioJob {
  readonly error: number;
  readonly usr_cpu: number;
  readonly sys_cpu: number;
  readonly read: FioDirection;
  readonly write: FioDirection;
}

function parseFioJson(path: string): { jobs: FioJob[] } {
  const text = readFileSync(path, "utf8");
  // fio may put warnings before the JSON document.
  return JSON.parse(text.slice(text.indexOf("{"))) as { jobs: FioJob[] };
}

/** Runs fio (nbd engine, JSON output to `c.outFile`) for `job` with `extra` options; the job's direction and the run. */
async function fio(job: JobSpec, c: JobContext, extra: readonly string[]): Promise<{ job: FioJob; d: FioDirection; r: RunResult }> {
  const f = job.fio!;
  const cmd = [
    ...c.pin, "fio", `--name=${job.name}`, "--ioengine=nbd", `--uri=${c.uri}`, `--rw=${f.rw}`, `--bs=${f.bs}`,
    `--iodepth=${f.qd}`, ...extra, "--output-format=json", `--output=${c.outFile}`,
  ];
  const r = await run(cmd);
  if (r.code !== 0) throw new Error(`fio ${job.name} failed (${r.code}): ${(r.stderr || r.stdout).trim().slice(0, 500)}`);
  const j = parseFioJson(c.outFile).jobs[0];
  if (!j) throw new Error(`fio ${job.name} wrote no job results to ${c.outFile}`);
  if (j.error) throw new Error(`fio ${job.name} reported error ${j.error}`);
  return { job: j, d: f.rw.includes("read") ? j.read : j.write, r };
}

function p99Us(d: FioDirection): number | null {
  const v = d.clat_ns?.percentile?.["99.000000"];
  return v != null ? v / 1000 : null;
}

export async function runFio(job: JobSpec, c: JobContext): Promise<Measurement> {
  if (job.rewrite) return runRewrite(job, c);
  if (job.fresh) {
    const trim = await run([...c.pin, "fio", "--name=empty", "--ioengine=nbd", `--uri=${c.uri}`, "--rw=trim", "--bs=64M", `--size=${c.sizeBytes}`, "--output=/dev/null"]);
    if (trim.code !== 0) throw new Error(`fio trim before ${job.name} failed (${trim.code}): ${(trim.stderr || trim.stdout).trim().slice(0, 500)}`);
  }
  const { job: j, d, r } = await fio(job, c, [
    "--time_based", `--runtime=${c.runtimeS}`, `--ramp_time=${c.rampS}`, "--norandommap", "--randrepeat=0",
  ]);
  return {
    iops: d.iops,
    bw: d.bw_bytes,
    meanLatUs: d.lat_ns?.mean != null ? d.lat_ns.mean / 1000 : null,
    p99LatUs: p99Us(d),
    // The fio process's own CPU over its whole run (ramp and start-up included), like the server's figure.
    clientCpuPct: (r.cpuSeconds / r.seconds) * 100,
    detail: { fioCpuPct: j.usr_cpu + j.sys_cpu },
  };
}

/** One repetition of a repeated job: bytes moved, the seconds they took, and the client's run. */
interface Rep {
  readonly bytes: number;
  readonly seconds: number;
  readonly r: RunResult;
}

/**
 * One untimed warm-up, then repetitions until `runtimeS` of measured time has passed (at least `minReps`). The
 * rate is total bytes over total measured time; client CPU is over the client's whole runs.
 */
async function repeated<T extends Rep>(once: () => Promise<T>, runtimeS: number, minReps: number) {
  await once();
  const reps: T[] = [];
  let seconds = 0;
  while (reps.length < minReps || seconds < runtimeS) {
    const rep = await once();
    reps.push(rep);
    seconds += rep.seconds;
  }
  const sum = (f: (rep: T) => number) => reps.reduce((a, rep) => a + f(rep), 0);
  return {
    reps,
    seconds,
    bw: sum((rep) => rep.bytes) / seconds,
    clientCpuPct: (sum((rep) => rep.r.cpuSeconds) / sum((rep) => rep.r.seconds)) * 100,
    rates: reps.map((rep) => rep.bytes / rep.seconds),
  };
}

/**
 * The rewrite job: fio passes that each write the whole export once, from offset 0, with the prefill's fixed
 * content (FIXED_CONTENT, same block size and depth), so every request carries exactly the bytes the export already
 * holds there. The rate is fio's own (bytes over its job runtime, start-up and connection excluded), summed over
 * the passes; p99 latency is the worst pass's.
 */
async function runRewrite(job: JobSpec, c: JobContext): Promise<Measurement> {
  const m = await repeated(async () => {
    const { d, r } = await fio(job, c, [`--size=${c.sizeBytes}`, ...FIXED_CONTENT]);
    // Total latency of the pass's requests (NaN when fio gave none), for a mean weighted by requests.
    const latNs = (d.lat_ns?.mean ?? Number.NaN) * d.total_ios;
    return { bytes: d.io_bytes, seconds: d.runtime / 1000, r, ios: d.total_ios, latNs, p99: p99Us(d) ?? Number.NaN };
  }, c.runtimeS, 1);
  const sum = (f: (rep: (typeof m.reps)[number]) => number) => m.reps.reduce((a, rep) => a + f(rep), 0);
  const meanLatUs = sum((rep) => rep.latNs) / sum((rep) => rep.ios) / 1000;
  const p99LatUs = Math.max(...m.reps.map((rep) => rep.p99));
  return {
    iops: sum((rep) => rep.ios) / m.seconds,
    bw: m.bw,
    meanLatUs: Number.isFinite(meanLatUs) ? meanLatUs : null,
    p99LatUs: Number.isFinite(p99LatUs) ? p99LatUs : null,
    clientCpuPct: m.clientCpuPct,
    detail: { passes: m.reps.length, seconds: m.seconds, rates: m.rates },
  };
}

/**
 * nbdcopy of the whole export to null:, nbdcopy's own defaults (it opens several connections only when the server
 * advertises multi-conn). One untimed warm-up copy, then copies until `runtimeS` has passed (at least 3); the
 * result is total bytes over total time.
 */
export async function runCopy(c: JobContext): Promise<Measurement> {
  const cmd = [...c.pin, "nbdcopy", c.uri, "null:"];
  const m = await repeated(async () => {
    const r = await run(cmd);
    if (r.code !== 0) throw new Error(`nbdcopy failed (${r.code}): ${r.stderr.trim().slice(0, 500)}`);
    return { bytes: c.sizeBytes, seconds: r.seconds, r };
  }, c.runtimeS, 3);
  return {
    iops: 0,
    bw: m.bw,
    meanLatUs: null,
    p99LatUs: null,
    clientCpuPct: m.clientCpuPct,
    detail: { reps: m.reps.length, seconds: m.seconds, rates: m.rates },
  };
}

/**
 * Writes the whole export once with 1M sequential writes at QD8, so reads hit allocated, written data, then flushes
 * (end_fsync: a dedup device commits its map and index). The content is FIXED_CONTENT, which the rewrite job writes
 * again.
 */
export async function prefill(c: { uri: string; pin: readonly string[]; outFile: string }): Promise<number> {
  const t0 = performance.now();
  const r = await run([
    ...c.pin, "fio", "--name=prefill", "--ioengine=nbd", `--uri=${c.uri}`, `--rw=${PREFILL.rw}`, `--bs=${PREFILL.bs}`,
    `--iodepth=${PREFILL.qd}`,
    ...FIXED_CONTENT, "--end_fsync=1", "--output-format=json", `--output=${c.outFile}`,
  ]);
  if (r.code !== 0) throw new Error(`prefill failed (${r.code}): ${(r.stderr || r.stdout).trim().slice(0, 500)}`);
  return (performance.now() - t0) / 1000;
}

/**
 * Reads the whole export once (nbdcopy to null:, untimed for the results): the "read once before timing" that makes
 * a cache warm. Returns the seconds it took.
 */
export async function readAll(c: { uri: string; pin: readonly string[] }): Promise<number> {
  const r = await run([...c.pin, "nbdcopy", c.uri, "null:"]);
  if (r.code !== 0) throw new Error(`warm-up read failed (${r.code}): ${r.stderr.trim().slice(0, 500)}`);
  return r.seconds;
}
