/**
 * Small system helpers for the benchmark: CPU accounting from /proc, a quiet-box gate, running a command to
 * completion, and collecting the versions and machine facts that go next to every result.
 */
import { readFileSync } from "node:fs";

/** Clock ticks per second for /proc/<pid>/stat and /proc/stat (USER_HZ, 100 on every Linux we run on). */
export const HZ = 100;

/** CPU seconds used by a process and all its threads (utime + stime), plus reaped children. NaN if gone. */
export function processCpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name (field 2) may contain spaces: split after its closing parenthesis.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // fields[0] is field 3 (state); utime..cstime are fields 14..17.
    const ticks = [11, 12, 13, 14].reduce((sum, i) => sum + Number(fields[i]), 0);
    return ticks / HZ;
  } catch {
    return Number.NaN;
  }
}

export interface CpuSample {
  /** Busy ticks (everything but idle and iowait) and steal ticks, whole box and per CPU. */
  readonly busy: number;
  readonly steal: number;
  readonly total: number;
  readonly perCpuBusy: number[];
}

export function sampleCpu(): CpuSample {
  const lines = readFileSync("/proc/stat", "utf8").split("\n");
  let busy = 0;
  let steal = 0;
  let total = 0;
  const perCpuBusy: number[] = [];
  for (const line of lines) {
    if (!line.startsWith("cpu")) continue;
    const [name, ...rest] = line.trim().split(/\s+/);
    const v = rest.map(Number);
    // user nice system idle iowait irq softirq steal guest guest_nice; guest time is already inside user.
    const work = [0, 1, 2, 5, 6].reduce((a, i) => a + (v[i] ?? 0), 0);
    if (name === "cpu") {
      total = v.slice(0, 8).reduce((a, b) => a + b, 0);
      busy = work;
      steal = v[7] ?? 0;
    } else {
      perCpuBusy[Number(name!.slice(3))] = work;
    }
  }
  return { busy, steal, total, perCpuBusy };
}

/** Cores busy between two samples taken `seconds` apart (2.0 = both CPUs of a 2-CPU box fully busy). */
export function coresBusy(a: CpuSample, b: CpuSample, seconds: number): { box: number; steal: number; perCpu: number[] } {
  return {
    box: (b.busy - a.busy) / HZ / seconds,
    steal: (b.steal - a.steal) / HZ / seconds,
    perCpu: b.perCpuBusy.map((v, i) => (v - (a.perCpuBusy[i] ?? 0)) / HZ / seconds),
  };
}

/**
 * Waits until the whole box has been at most `maxCores` busy for `windowS` seconds (our servers are idle between
 * jobs, so what remains is other people's work), giving up after `limitS`. Returns the seconds waited and the last
 * load seen.
 */
export async function quietGate(maxCores: number, windowS: number, limitS: number): Promise<{ waited: number; load: number }> {
  const t0 = performance.now();
  for (;;) {
    const a = sampleCpu();
    await Bun.sleep(windowS * 1000);
    const load = coresBusy(a, sampleCpu(), windowS).box;
    const waited = (performance.now() - t0) / 1000;
    if (load <= maxCores || waited >= limitS) return { waited, load };
  }
}

export interface RunResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
  readonly seconds: number;
  /** CPU seconds the child used (user + system, its threads included). */
  readonly cpuSeconds: number;
}

/** Runs a command to completion, capturing its output. */
export async function run(cmd: string[], opts: { cwd?: string } = {}): Promise<RunResult> {
  const t0 = performance.now();
  const proc = Bun.spawn(cmd, { stdout: "pipe", stderr: "pipe", stdin: "ignore", cwd: opts.cwd });
  const [stdout, stderr, code] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ]);
  const seconds = (performance.now() - t0) / 1000;
  const usage = proc.resourceUsage();
  const cpuSeconds = usage ? Number(usage.cpuTime.total) / 1e6 : Number.NaN;
  return { code, stdout, stderr, seconds, cpuSeconds };
}

/** First line of a command's output, or "unknown". */
async function firstLine(cmd: string[]): Promise<string> {
  try {
    const r = await run(cmd);
    return (r.stdout || r.stderr).trim().split("\n")[0] ?? "unknown";
  } catch {
    return "unknown";
  }
}

export interface MachineFacts {
  date: string;
  hostname: string;
  kernel: string;
  cpuModel: string;
  cpus: number;
  memoryGiB: number;
  bun: string;
  nbdkit: string;
  fio: string;
  libnbd: string;
  gitCommit: string;
  /** Uncommitted changes in bin/ or src/ (what usbd-tui runs), and a short hash of that diff. */
  gitDirty: boolean;
  gitDiffHash: string;
  scratchFs: string;
}

export async function machineFacts(repo: string, scratch: string): Promise<MachineFacts> {
  const cpuinfo = readFileSync("/proc/cpuinfo", "utf8");
  const meminfo = readFileSync("/proc/meminfo", "utf8");
  const memKb = Number(/MemTotal:\s+(\d+)/.exec(meminfo)?.[1] ?? 0);
  const status = await run(["git", "status", "--porcelain", "--", "bin", "src"], { cwd: repo }).catch(() => undefined);
  const diff = await run(["git", "diff", "HEAD", "--", "bin", "src"], { cwd: repo }).catch(() => undefined);
  return {
    date: new Date().toISOString(),
    hostname: (await firstLine(["hostname"])) || "unknown",
    kernel: await firstLine(["uname", "-r"]),
    cpuModel: /model name\s*:\s*(.*)/.exec(cpuinfo)?.[1]?.trim() ?? "unknown",
    cpus: navigator.hardwareConcurrency,
    memoryGiB: Math.round((memKb / 1024 / 1024) * 10) / 10,
    bun: Bun.version,
    nbdkit: await firstLine(["nbdkit", "--version"]),
    fio: await firstLine(["fio", "--version"]),
    libnbd: (await run(["nbdcopy", "--version"]).catch(() => undefined))?.stdout.trim().split("\n").pop() ?? "unknown",
    gitCommit: await firstLine(["git", "-C", repo, "rev-parse", "--short", "HEAD"]),
    gitDirty: (status?.stdout.trim().length ?? 0) > 0,
    gitDiffHash: new Bun.CryptoHasher("sha256").update(diff?.stdout ?? "").digest("hex").slice(0, 10),
    scratchFs: await firstLine(["stat", "-f", "-c", "%T", scratch]),
  };
}
