/**
 * fio for the client suites: run a job file and fail on any verify error, and the randrw verify job they share.
 *
 * Why the verify job looks the way it does (fio 3.33, checked against `nbdkit memory`): jobs that share a range
 * overwrite each other's blocks, so the verify phase reports "bad header rand_seed" even on a correct server; each
 * job therefore owns its own region (`offset_increment` = `size`). `time_based` is avoided because a time-based
 * randrw job never reaches its verify phase (it passes without checking anything). `loops` repeats the job over
 * the same region, `verify_backlog` verifies while writes are still in flight, and `bsrange` mixes request sizes.
 */
import { join } from "node:path";
import { type RunResult, runResult } from "./helpers.ts";

export interface FioDir {
  total_ios: number;
  io_bytes: number;
}
export interface FioJob {
  jobname: string;
  error: number;
  read: FioDir;
  write: FioDir;
  trim: FioDir;
}

/** Runs a fio job file (as `<dir>/<name>.fio`, JSON output in `<name>.json`) whatever its outcome: for controls that must fail. */
export async function fioResult(dir: string, name: string, jobFile: string): Promise<RunResult> {
  const path = join(dir, `${name}.fio`);
  await Bun.write(path, jobFile);
  return runResult(["fio", "--output-format=json", `--output=${join(dir, `${name}.json`)}`, path], { timeoutMs: 90_000, cwd: dir });
}

/** Runs a fio job file, returning its JSON jobs; fails when fio fails or prints any verify error. */
export async function fio(dir: string, name: string, jobFile: string): Promise<FioJob[]> {
  const r = await fioResult(dir, name, jobFile);
  const verifyLines = `${r.stdout}\n${r.stderr}`.split("\n").filter((l) => l.includes("verify:"));
  if (r.exitCode !== 0 || verifyLines.length > 0) {
    throw new Error(
      `fio ${name} exited with ${r.exitCode} and ${verifyLines.length} verify errors\n` +
        `${verifyLines.slice(0, 10).join("\n")}\n--- stderr ---\n${r.stderr.trim().slice(-3000)}\n--- job file ---\n${jobFile}`,
    );
  }
  return (JSON.parse(await Bun.file(join(dir, `${name}.json`)).text()) as { jobs: FioJob[] }).jobs;
}

export interface RandrwVerifyShape {
  readonly jobs: number;
  /** Each job's own region; job i works on [i * regionMiB, (i + 1) * regionMiB). */
  readonly regionMiB: number;
  readonly loops: number;
  /** Further `[global]` lines, e.g. `buffer_compress_percentage=50`. */
  readonly extra?: readonly string[];
}

/** The randrw job with crc32c verify, each job in its own region (see the file comment for why). */
export function randrwVerifyJob(uri: string, shape: RandrwVerifyShape): string {
  return `[global]
ioengine=nbd
uri=${uri}
rw=randrw
rwmixread=50
bsrange=4k-128k
iodepth=16
numjobs=${shape.jobs}
size=${shape.regionMiB}m
offset_increment=${shape.regionMiB}m
loops=${shape.loops}
verify=crc32c
verify_backlog=512
verify_fatal=1
verify_state_save=0
${(shape.extra ?? []).map((l) => `${l}\n`).join("")}[randrw-verify]
`;
}
