/**
 * The benchmark jobs: fio with its nbd engine (one libnbd connection per job) and an nbdcopy read of the whole
 * export. Each returns one measurement; the caller brackets it with CPU accounting.
 */
import { readFileSync } from "node:fs";
import { run } from "./sys.ts";

export type Metric = "iops" | "bw";

export interface JobSpec {
  readonly name: string;
  readonly title: string;
  /** What the ratio is computed on: IOPS for 4k jobs, bytes/s for large transfers. */
  readonly metric: Metric;
  readonly fio?: { readonly rw: string; readonly bs: string; readonly qd: number };
  readonly copy?: true;
}

/** In run order: reads first (on the prefilled export), then writes. */
export const JOBS: readonly JobSpec[] = [
  { name: "randread-4k-qd1", title: "4k random read, QD1", metric: "iops", fio: { rw: "randread", bs: "4k", qd: 1 } },
  { name: "randread-4k-qd32", title: "4k random read, QD32", metric: "iops", fio: { rw: "randread", bs: "4k", qd: 32 } },
  { name: "read-1m-qd8", title: "1M sequential read, QD8", metric: "bw", fio: { rw: "read", bs: "1M", qd: 8 } },
  { name: "nbdcopy", title: "nbdcopy URI null:", metric: "bw", copy: true },
  { name: "randwrite-4k-qd1", title: "4k random write, QD1", metric: "iops", fio: { rw: "randwrite", bs: "4k", qd: 1 } },
  { name: "randwrite-4k-qd32", title: "4k random write, QD32", metric: "iops", fio: { rw: "randwrite", bs: "4k", qd: 32 } },
  { name: "write-1m-qd8", title: "1M sequential write, QD8", metric: "bw", fio: { rw: "write", bs: "1M", qd: 8 } },
];

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

function parseFioJson(path: string): any {
  const text = readFileSync(path, "utf8");
  // fio may put warnings before the JSON document.
  return JSON.parse(text.slice(text.indexOf("{")));
}

export async function runFio(job: JobSpec, c: JobContext): Promise<Measurement> {
  const f = job.fio!;
  const cmd = [
    ...c.pin, "fio", `--name=${job.name}`, "--ioengine=nbd", `--uri=${c.uri}`, `--rw=${f.rw}`, `--bs=${f.bs}`,
    `--iodepth=${f.qd}`, "--time_based", `--runtime=${c.runtimeS}`, `--ramp_time=${c.rampS}`, "--norandommap",
    "--randrepeat=0", "--output-format=json", `--output=${c.outFile}`,
  ];
  const r = await run(cmd);
  if (r.code !== 0) throw new Error(`fio ${job.name} failed (${r.code}): ${(r.stderr || r.stdout).trim().slice(0, 500)}`);
  const j = parseFioJson(c.outFile).jobs[0];
  if (j.error) throw new Error(`fio ${job.name} reported error ${j.error}`);
  const d = f.rw.includes("read") ? j.read : j.write;
  const pct = d.clat_ns?.percentile ?? {};
  return {
    iops: d.iops,
    bw: d.bw_bytes,
    meanLatUs: d.lat_ns?.mean != null ? d.lat_ns.mean / 1000 : null,
    p99LatUs: pct["99.000000"] != null ? pct["99.000000"] / 1000 : null,
    // The fio process's own CPU over its whole run (ramp and start-up included), like the server's figure.
    clientCpuPct: (r.cpuSeconds / r.seconds) * 100,
    detail: { fioCpuPct: j.usr_cpu + j.sys_cpu },
  };
}

/**
 * nbdcopy of the whole export to null:, nbdcopy's own defaults (it opens several connections only when the server
 * advertises multi-conn). One untimed warm-up copy, then copies until `runtimeS` has passed (at least 3); the
 * result is total bytes over total time.
 */
export async function runCopy(c: JobContext): Promise<Measurement> {
  const cmd = [...c.pin, "nbdcopy", c.uri, "null:"];
  const once = async () => {
    const r = await run(cmd);
    if (r.code !== 0) throw new Error(`nbdcopy failed (${r.code}): ${r.stderr.trim().slice(0, 500)}`);
    return r;
  };
  await once();
  let seconds = 0;
  let cpu = 0;
  let reps = 0;
  const rates: number[] = [];
  while (reps < 3 || seconds < c.runtimeS) {
    const r = await once();
    seconds += r.seconds;
    cpu += r.cpuSeconds;
    rates.push(c.sizeBytes / r.seconds);
    reps++;
  }
  return {
    iops: 0,
    bw: (c.sizeBytes * reps) / seconds,
    meanLatUs: null,
    p99LatUs: null,
    clientCpuPct: (cpu / seconds) * 100,
    detail: { reps, seconds, rates },
  };
}

/** Writes the whole export once with 1M sequential writes at QD8, so reads hit allocated, written data. */
export async function prefill(c: { uri: string; pin: readonly string[]; outFile: string }): Promise<number> {
  const t0 = performance.now();
  const r = await run([
    ...c.pin, "fio", "--name=prefill", "--ioengine=nbd", `--uri=${c.uri}`, "--rw=write", "--bs=1M", "--iodepth=8",
    "--output-format=json", `--output=${c.outFile}`,
  ]);
  if (r.code !== 0) throw new Error(`prefill failed (${r.code}): ${(r.stderr || r.stdout).trim().slice(0, 500)}`);
  return (performance.now() - t0) / 1000;
}
