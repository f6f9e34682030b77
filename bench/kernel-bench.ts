/**
 * The kernel path measured inside the test VM (run it through bench/kernel.sh): fio with libaio and O_DIRECT on
 * /dev/nbdX, usbd-tui's mem device attached through netlink against nbd-client + nbdkit's memory plugin in the same
 * VM, alternating server by server and round by round. Prints a Markdown table of median ratios; raw numbers go to
 * bench/results/kernel-<timestamp>.json.
 */
import { existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import type { Subprocess } from "bun";
import { nbdInUse, nbdIndexes } from "../src/engine/kernel/sysfs.ts";
import { median } from "./lib/report.ts";
import { run } from "./lib/sys.ts";

const REPO = resolve(import.meta.dir, "..");
const HELP = `usage: bench/kernel.sh [--rounds N] [--runtime S] [--ramp S] [--size MiB] [--jobs a,b]

  --rounds N    rounds (default 3); each starts both servers fresh, prefills them, runs every job on each
  --runtime S   measured seconds per job (default 5)
  --ramp S      seconds each job runs before its measurement starts (fio ramp_time, default 1)
  --size MiB    device size in MiB (default 256)
  --jobs a,b    comma list of jobs (default: all): JOBS
`;

interface Job {
  readonly name: string;
  readonly rw: string;
  readonly bs: string;
  readonly qd: number;
  readonly metric: "iops" | "bw";
}

const JOBS: readonly Job[] = [
  { name: "randread-4k-qd1", rw: "randread", bs: "4k", qd: 1, metric: "iops" },
  { name: "randread-4k-qd32", rw: "randread", bs: "4k", qd: 32, metric: "iops" },
  { name: "read-1m-qd8", rw: "read", bs: "1M", qd: 8, metric: "bw" },
  { name: "randwrite-4k-qd32", rw: "randwrite", bs: "4k", qd: 32, metric: "iops" },
  { name: "write-1m-qd8", rw: "write", bs: "1M", qd: 8, metric: "bw" },
];

type Server = "usbd-kernel" | "nbd-client+nbdkit";

interface Attached {
  readonly device: string;
  stop(): Promise<void>;
}

/** usbd-tui's mem device attached to the kernel through netlink, one connection. */
async function startUsbd(sizeMiB: number): Promise<Attached> {
  const proc = Bun.spawn([join(REPO, "node_modules/.bin/bun"), join(REPO, "bin/usbd-tui.ts"), "--headless", `--store-size=${sizeMiB}MiB`, "--log-level=warn"], {
    stdout: "pipe",
    stderr: "inherit",
  });
  const device = await readUntil(proc, /as (\/dev\/nbd\d+) \(/);
  return {
    device,
    async stop() {
      proc.kill("SIGTERM");
      if ((await proc.exited) !== 0) throw new Error("usbd-tui did not stop cleanly");
    },
  };
}

let peers = 0;

/** nbdkit's memory plugin on a Unix socket, attached with nbd-client (netlink, one connection, 4 KiB blocks). */
async function startPeer(sizeMiB: number): Promise<Attached> {
  const socket = `/run/usbd-bench-nbdkit-${process.pid}-${++peers}.sock`;
  const nbdkit = Bun.spawn(["nbdkit", "-f", "-U", socket, "memory", `${sizeMiB}M`], { stdout: "ignore", stderr: "inherit" });
  for (let i = 0; i < 200 && !existsSync(socket); i++) await Bun.sleep(25);
  const index = nbdIndexes().find((i) => !nbdInUse(i));
  if (index === undefined) throw new Error("no free /dev/nbdN for nbd-client");
  const device = `/dev/nbd${index}`;
  const attach = await run(["nbd-client", "-unix", socket, device, "-b", "4096", "-N", ""]);
  if (attach.code !== 0) throw new Error(`nbd-client failed: ${attach.stderr || attach.stdout}`);
  return {
    device,
    async stop() {
      await run(["nbd-client", "-d", device]);
      for (let i = 0; i < 200 && nbdInUse(index); i++) await Bun.sleep(25);
      nbdkit.kill("SIGTERM");
      await nbdkit.exited;
      rmSync(socket, { force: true });
    },
  };
}

async function readUntil(proc: Subprocess<"ignore", "pipe", "inherit">, pattern: RegExp): Promise<string> {
  const decoder = new TextDecoder();
  let text = "";
  for await (const chunk of proc.stdout) {
    text += decoder.decode(chunk, { stream: true });
    const m = pattern.exec(text);
    if (m) return m[1]!;
  }
  throw new Error(`usbd-tui exited before attaching:\n${text}`);
}

async function fio(device: string, args: string[]): Promise<{ iops: number; bw: number }> {
  const r = await run(["fio", "--name=job", `--filename=${device}`, "--ioengine=libaio", "--direct=1", "--output-format=json", ...args]);
  if (r.code !== 0) throw new Error(`fio failed: ${r.stderr || r.stdout}`);
  const job = (JSON.parse(r.stdout.slice(r.stdout.indexOf("{"))) as { jobs: Array<Record<string, { iops: number; bw_bytes: number }>> }).jobs[0]!;
  const side = args.some((a) => a.includes("read")) ? job.read! : job.write!;
  return { iops: side.iops, bw: side.bw_bytes };
}

function parseArgs(argv: string[]) {
  const o = { rounds: 3, runtime: 5, ramp: 1, sizeMiB: 256, jobs: [...JOBS] };
  for (let i = 0; i < argv.length; i++) {
    const [flag, inline] = argv[i]!.split("=", 2);
    const value = () => inline ?? argv[++i] ?? "";
    if (flag === "--rounds") o.rounds = Number(value());
    else if (flag === "--runtime") o.runtime = Number(value());
    else if (flag === "--ramp") o.ramp = Number(value());
    else if (flag === "--size") o.sizeMiB = Number(value());
    else if (flag === "--jobs") {
      const names = value().split(",");
      o.jobs = JOBS.filter((j) => names.includes(j.name));
    } else if (flag === "-h" || flag === "--help") {
      process.stdout.write(HELP.replace("JOBS", JOBS.map((j) => j.name).join(", ")));
      process.exit(0);
    } else throw new Error(`unknown option ${flag} (see --help)`);
  }
  return o;
}

interface Row {
  readonly round: number;
  readonly server: Server;
  readonly job: string;
  readonly value: number;
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  const rows: Row[] = [];
  const started = new Date().toISOString();
  for (let round = 1; round <= o.rounds; round++) {
    const order: Server[] = round % 2 ? ["usbd-kernel", "nbd-client+nbdkit"] : ["nbd-client+nbdkit", "usbd-kernel"];
    for (const server of order) {
      const attached = server === "usbd-kernel" ? await startUsbd(o.sizeMiB) : await startPeer(o.sizeMiB);
      try {
        await fio(attached.device, ["--rw=write", "--bs=1M", "--iodepth=8"]);
        for (const job of o.jobs) {
          const m = await fio(attached.device, [
            `--rw=${job.rw}`,
            `--bs=${job.bs}`,
            `--iodepth=${job.qd}`,
            "--time_based",
            `--runtime=${o.runtime}`,
            `--ramp_time=${o.ramp}`,
            "--norandommap",
            "--randrepeat=0",
          ]);
          rows.push({ round, server, job: job.name, value: job.metric === "iops" ? m.iops : m.bw });
          process.stderr.write(`round ${round} ${server} ${job.name}: ${job.metric === "iops" ? `${m.iops.toFixed(0)} IOPS` : `${(m.bw / 1e6).toFixed(0)} MB/s`}\n`);
        }
      } finally {
        await attached.stop();
      }
    }
  }

  const lines = [
    `Kernel path, ${started}: fio libaio O_DIRECT on /dev/nbdX, ${o.sizeMiB} MiB mem devices, ${o.rounds} rounds x ${o.runtime} s per job after a ${o.ramp} s ramp, kernel ${(await run(["uname", "-r"])).stdout.trim()} under QEMU TCG.`,
    "",
    "| job | usbd-tui (netlink) | nbd-client + nbdkit memory | ratio (median) | ratio min-max | target | met |",
    "|---|---:|---:|---:|---:|---:|:---:|",
  ];
  const summary = [];
  for (const job of o.jobs) {
    const of = (server: Server) => rows.filter((r) => r.job === job.name && r.server === server);
    const ratios = of("usbd-kernel").map((r) => r.value / (of("nbd-client+nbdkit").find((p) => p.round === r.round)?.value ?? Number.NaN));
    const show = (v: number) => (job.metric === "iops" ? `${(v / 1000).toFixed(2)}k IOPS` : `${(v / 1e6).toFixed(0)} MB/s`);
    const ratio = median(ratios);
    summary.push({ job: job.name, ratio, ratios });
    lines.push(
      `| ${job.name} | ${show(median(of("usbd-kernel").map((r) => r.value)))} | ${show(median(of("nbd-client+nbdkit").map((r) => r.value)))} | ${ratio.toFixed(2)}x | ${Math.min(...ratios).toFixed(2)}-${Math.max(...ratios).toFixed(2)} | >= 1.0x | ${ratio >= 1 ? "yes" : "**no**"} |`,
    );
  }
  const out = join(REPO, "bench/results");
  mkdirSync(out, { recursive: true });
  const file = join(out, `kernel-${started.replace(/[:.]/g, "-")}.json`);
  writeFileSync(file, JSON.stringify({ started, options: { ...o, jobs: o.jobs.map((j) => j.name) }, rows, summary }, null, 2));
  process.stdout.write(`${lines.join("\n")}\n\nraw results: ${file}\n`);
}

await main();
