/**
 * usbd-tui vs nbdkit (and, for the dedup device, vs usbd-tui's own mem device; for the objstore device, vs usbd-tui's
 * own file device), measured in one run with the servers alternating job by job. Run it through bench/run.sh, which checks the tools first; `bench/run.sh --help` lists the
 * options, docs/BENCHMARKS.md explains the method.
 */
import { cpSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { defaultJobs, JOBS, type JobSpec, prefill, readAll, runCopy, runFio } from "./lib/jobs.ts";
import { type S3Child, startS3Child } from "./lib/s3rver-child.ts";
import { markdown, type RecordRow, summarize } from "./lib/report.ts";
import {
  type DedupCompress,
  DEVICE_KINDS,
  type DeviceKind,
  describe,
  type Gauges,
  GROUPS,
  groupsWithBaseline,
  type RunningServer,
  type ServerName,
  startServer,
} from "./lib/servers.ts";
import { makePki } from "../tests/helpers/tls-certs.ts";
import { coresBusy, machineFacts, processCpuSeconds, quietGate, run, sampleCpu } from "./lib/sys.ts";

const HELP = `usage: bench/run.sh [options]

  --rounds N         rounds (default 5); each round starts fresh servers, prefills them, and runs every job
                     against usbd-tui and its peers back to back (A B, then B A in the next round)
  --runtime S        measured seconds per fio job and minimum per nbdcopy or rewrite series (default 6)
  --ramp S           fio ramp_time before measuring (default 1)
  --devices a,b      device kinds to measure, each against its peers (default: all):
${DEVICE_KINDS.map((k) => `                       ${k.padEnd(8)} ${GROUPS[k].usbd} vs ${GROUPS[k].peers.join(", ")}`).join("\n")}
  --only KIND        the same as --devices KIND
  --jobs a,b         comma list of jobs, run for every device kind chosen (default: each kind's own list):
${JOBS.map((j) => `                       ${j.name.padEnd(18)} ${j.kinds ? j.kinds.join(",") : "all"}`).join("\n")}
  --dedup-compress lz4|none
                     the dedup device's --dedup-compress (default: its own default, lz4)
  --objstore-objsize SIZE
                     the objstore device's --objstore-objsize (default: its own default, 4MiB). The objstore
                     group starts its own s3rver each round (bench/lib/s3rver-child.ts, data in the scratch
                     directory), fills the export (FLUSH waits for the uploads: --objstore-flush-mode=remote),
                     then reads every export of the group once before timing: warm-cache reads
  --pin POLICY       CPU placement, applied equally to all servers (default split):
                       split  server on --server-cpu (0), fio/nbdcopy on --client-cpu (1), via taskset
                       same   server and client both on --server-cpu
                       none   no pinning; the scheduler decides (QD1 results then vary a lot)
  --server-cpu N     CPU for the servers (default 0)
  --client-cpu N     CPU for fio and nbdcopy (default 1)
  --size SIZE        export size, e.g. 1GiB or 512MiB (default 1GiB)
  --scratch DIR      sockets, images and logs (default /dev/shm/usbd-bench, tmpfs; both file devices' images
                     live here, on the same filesystem)
  --gate CORES       before each job wait (max 30 s) until the box is at most CORES busy; 0 = off (default 0.3)
  --out DIR          where the JSON results go (default bench/results)
  --keep             keep the scratch directory afterwards (logs, fio output; the exports' images and the dedup
                     store are deleted at the end of every round regardless)
  --live             run usbd-tui from the working tree itself; by default it runs from a copy of bin/, src/ and
                     package.json taken at start, so edits made by others during a long run cannot mix versions
  --tls              every server with TLS required (usbd-tui --tls require, nbdkit --tls=require) and the same
                     certificates, made with openssl in the scratch directory; clients connect with nbds+unix://
  --baseline REV     also run each usbd-tui device from git revision REV (its bin/, src/ and package.json, taken
                     with git archive; node_modules is this checkout's), as the first peer of its group: a paired,
                     same-run ratio of the code now against REV for every job (issue 14's "no job loses more than
                     3%" rule), beside the nbdkit ratios
  --aa               A/A check of the harness: nbdkit stands in for usbd-tui, so every ratio should be ~1.0
                     and the spread shows the noise floor
`;

interface Options {
  rounds: number;
  runtime: number;
  ramp: number;
  devices: DeviceKind[];
  /** Jobs chosen with --jobs; undefined: each device kind's defaults. */
  jobs?: JobSpec[];
  dedupCompress?: DedupCompress;
  /** --objstore-objsize for usbd-objstore, as given (e.g. 1MiB); undefined: the device's default. */
  objstoreObjsize?: string;
  pin: "split" | "same" | "none";
  serverCpu: number;
  clientCpu: number;
  sizeBytes: number;
  scratch: string;
  gate: number;
  out: string;
  keep: boolean;
  aa: boolean;
  live: boolean;
  tls: boolean;
  /** --baseline: a git revision whose usbd-tui also runs, as each group's first peer. */
  baseline?: string;
}

function parseSize(s: string): number {
  const m = /^(\d+)\s*(GiB|G|MiB|M)?$/i.exec(s);
  if (!m) throw new Error(`bad size ${s} (use e.g. 1GiB or 512MiB)`);
  const unit = (m[2] ?? "").toUpperCase().startsWith("G") ? 2 ** 30 : m[2] ? 2 ** 20 : 1;
  return Number(m[1]) * unit;
}

function parseArgs(argv: string[], repo: string): Options {
  const o: Options = {
    rounds: 5,
    runtime: 6,
    ramp: 1,
    devices: [...DEVICE_KINDS],
    pin: "split",
    serverCpu: 0,
    clientCpu: 1,
    sizeBytes: 2 ** 30,
    scratch: "/dev/shm/usbd-bench",
    gate: 0.3,
    out: join(repo, "bench/results"),
    keep: false,
    aa: false,
    live: false,
    tls: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const eq = arg.indexOf("=");
    const key = eq > 0 ? arg.slice(0, eq) : arg;
    const value = (): string => {
      const v = eq > 0 ? arg.slice(eq + 1) : argv[++i];
      if (v === undefined) throw new Error(`${key} needs a value`);
      return v;
    };
    const num = (min: number): number => {
      const v = Number(value());
      if (!Number.isFinite(v) || v < min) throw new Error(`${key} must be a number >= ${min}`);
      return v;
    };
    switch (key) {
      case "-h":
      case "--help":
        process.stdout.write(HELP);
        process.exit(0);
      case "--rounds": o.rounds = Math.floor(num(1)); break;
      case "--runtime": o.runtime = num(1); break;
      case "--ramp": o.ramp = num(0); break;
      case "--only":
      case "--devices": {
        const kinds = value().split(",").map((s) => s.trim()).filter(Boolean);
        const unknown = kinds.filter((k) => !DEVICE_KINDS.some((d) => d === k));
        if (unknown.length || kinds.length === 0) {
          throw new Error(`${key} takes device kinds among ${DEVICE_KINDS.join(", ")}${unknown.length ? `, not ${unknown.join(", ")}` : ""}`);
        }
        o.devices = DEVICE_KINDS.filter((k) => kinds.includes(k));
        break;
      }
      case "--dedup-compress": {
        const v = value();
        if (v !== "lz4" && v !== "none") throw new Error("--dedup-compress takes lz4 or none");
        o.dedupCompress = v;
        break;
      }
      case "--objstore-objsize": {
        const v = value();
        const bytes = parseSize(v);
        if (bytes < 4096 || (bytes & (bytes - 1)) !== 0) throw new Error("--objstore-objsize takes a power of two of at least 4KiB, e.g. 1MiB");
        o.objstoreObjsize = v;
        break;
      }
      case "--jobs": {
        const names = value().split(",").map((s) => s.trim()).filter(Boolean);
        const unknown = names.filter((n) => !JOBS.some((j) => j.name === n));
        if (unknown.length) throw new Error(`unknown job(s) ${unknown.join(", ")}; jobs: ${JOBS.map((j) => j.name).join(", ")}`);
        o.jobs = JOBS.filter((j) => names.includes(j.name));
        break;
      }
      case "--pin": {
        const v = value();
        if (v !== "split" && v !== "same" && v !== "none") throw new Error("--pin takes split, same or none");
        o.pin = v;
        break;
      }
      case "--server-cpu": o.serverCpu = Math.floor(num(0)); break;
      case "--client-cpu": o.clientCpu = Math.floor(num(0)); break;
      case "--size": o.sizeBytes = parseSize(value()); break;
      case "--scratch": o.scratch = resolve(value()); break;
      case "--gate": o.gate = num(0); break;
      case "--out": o.out = resolve(value()); break;
      case "--keep": o.keep = true; break;
      case "--aa": o.aa = true; break;
      case "--live": o.live = true; break;
      case "--tls": o.tls = true; break;
      case "--baseline": o.baseline = value(); break;
      default:
        throw new Error(`unknown option ${arg}\n\n${HELP}`);
    }
  }
  const cpus = navigator.hardwareConcurrency;
  if (o.pin !== "none" && (o.serverCpu >= cpus || o.clientCpu >= cpus)) {
    throw new Error(`--pin ${o.pin} needs CPUs ${o.serverCpu} and ${o.clientCpu}, this machine has ${cpus}; use --pin none`);
  }
  if (o.pin === "split" && o.serverCpu === o.clientCpu) throw new Error("--pin split needs different server and client CPUs");
  return o;
}

/** The TREE paths of the usbd-tui revision `rev`, unpacked into `dest` with this checkout's node_modules; its commit. */
async function unpackRevision(repo: string, rev: string, dest: string): Promise<string> {
  const commit = await run(["git", "-C", repo, "rev-parse", "--verify", `${rev}^{commit}`]);
  if (commit.code !== 0) throw new Error(`--baseline ${rev}: not a commit of this repository (${commit.stderr.trim()})`);
  const sha = commit.stdout.trim();
  mkdirSync(dest, { recursive: true });
  const archive = join(dest, "tree.tar");
  const packed = await run(["git", "-C", repo, "archive", "--format=tar", "-o", archive, sha, ...TREE]);
  if (packed.code !== 0) throw new Error(`--baseline ${rev}: git archive failed: ${packed.stderr.trim()}`);
  const unpacked = await run(["tar", "-x", "-f", archive, "-C", dest]);
  if (unpacked.code !== 0) throw new Error(`--baseline ${rev}: tar failed: ${unpacked.stderr.trim()}`);
  rmSync(archive);
  symlinkSync(join(repo, "node_modules"), join(dest, "node_modules"));
  return sha;
}

function mkdirScratch(dir: string): string {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  return dir;
}

function log(msg: string): void {
  process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

/** What a usbd-tui server needs of a checkout (node_modules aside). */
const TREE = ["bin", "src", "package.json", "tsconfig.json", "bunfig.toml"];

const jobsFor = (o: Options, kind: DeviceKind): JobSpec[] => o.jobs ?? defaultJobs(kind);

/** The dedup store's or the objstore cache's state in a few words, for the log. */
function fmtGauges(g: Gauges | undefined): string {
  if (!g) return "";
  const n = (name: string) => g[name] ?? Number.NaN;
  if ("cache" in g && "downloaded" in g) {
    const mib = (name: string) => `${(n(name) / 2 ** 20).toFixed(0)} MiB`;
    return ` | objstore: cache ${mib("cache")}, ${n("dirty objects")} dirty objects, uploaded ${mib("uploaded")}, ` +
      `downloaded ${mib("downloaded")}, compression ${n("compression ratio").toFixed(2)}, ${n("store errors")} store errors`;
  }
  return ` | store: ${n("unique blocks")} unique blocks, dedup ${n("dedup ratio").toFixed(2)}, ${n("reclaimable blocks")} reclaimable, ` +
    `${n("unflushed changes")} unflushed, file ${(n("store file") / 2 ** 20).toFixed(0)} MiB`;
}

function fmtResult(r: RecordRow): string {
  if (!r.ok || !r.result) return `FAILED: ${r.error}`;
  const m = r.result;
  const main = m.iops > 0 && !r.job.includes("1m") ? `${(m.iops / 1000).toFixed(1)}k IOPS` : `${(m.bw / 1e9).toFixed(2)} GB/s`;
  const lat = m.p99LatUs != null ? ` p99 ${m.p99LatUs.toFixed(0)}us` : "";
  return `${main}${lat} srvCPU ${r.serverCpuPct?.toFixed(0)}% cli ${m.clientCpuPct.toFixed(0)}% other ${r.otherCores?.toFixed(2)}${fmtGauges(r.gauges)}`;
}

async function main(): Promise<void> {
  const repo = resolve(import.meta.dir, "..");
  const o = parseArgs(process.argv.slice(2), repo);
  const serverPin = o.pin === "none" ? [] : ["taskset", "-c", String(o.serverCpu)];
  const clientPin = o.pin === "none" ? [] : ["taskset", "-c", String(o.pin === "same" ? o.serverCpu : o.clientCpu)];
  const policy =
    o.pin === "split"
      ? `split: servers pinned to CPU ${o.serverCpu}, fio/nbdcopy to CPU ${o.clientCpu} (taskset)`
      : o.pin === "same"
        ? `same: servers and fio/nbdcopy all pinned to CPU ${o.serverCpu} (taskset)`
        : "none: no pinning, the scheduler places every thread";

  rmSync(o.scratch, { recursive: true, force: true });
  mkdirSync(o.scratch, { recursive: true });
  mkdirSync(o.out, { recursive: true });
  const facts = await machineFacts(repo, o.scratch);
  // usbd-tui runs from a snapshot of the code as it is now (committed or not), recorded in the results.
  let serverRoot = repo;
  if (!o.live) {
    serverRoot = join(o.scratch, "tree");
    mkdirSync(serverRoot, { recursive: true });
    for (const p of TREE) {
      cpSync(join(repo, p), join(serverRoot, p), { recursive: true });
    }
    symlinkSync(join(repo, "node_modules"), join(serverRoot, "node_modules"));
  }
  const baselineRoot = o.baseline === undefined ? undefined : join(o.scratch, "baseline");
  const baselineCommit = o.baseline === undefined ? undefined : await unpackRevision(repo, o.baseline, baselineRoot!);
  const groups = o.baseline === undefined ? GROUPS : groupsWithBaseline();
  const stamp = facts.date.replace(/[:.]/g, "-").slice(0, 19);
  const resultsPath = join(o.out, `bench-${stamp}.json`);
  const rows: RecordRow[] = [];
  const servers: Record<string, unknown> = {};
  const stops: Array<{ round: number; server: ServerName; clean: boolean; exitCode: number | null; signal: string | null }> = [];
  const prefills: Array<{ round: number; server: ServerName; seconds: number; warmReadSeconds?: number; gauges?: Gauges }> = [];
  const save = (extra: Record<string, unknown> = {}) =>
    writeFileSync(
      resultsPath,
      JSON.stringify(
        {
          facts,
          ...(baselineCommit ? { baselineCommit } : {}),
          options: { ...o, jobs: Object.fromEntries(o.devices.map((k) => [k, jobsFor(o, k).map((j) => j.name)])) },
          policy,
          servers,
          stops,
          prefills,
          records: rows,
          ...extra,
        },
        null,
        1,
      ),
    );

  const running = new Set<RunningServer>();
  let interrupted = false;
  const onSignal = async (sig: string) => {
    if (interrupted) return;
    interrupted = true;
    log(`${sig}: stopping servers`);
    await Promise.all([...running].map((s) => s.stop(2000)));
    save({ interrupted: true });
    process.exit(130);
  };
  process.on("SIGINT", () => void onSignal("SIGINT"));
  process.on("SIGTERM", () => void onSignal("SIGTERM"));

  log(`bun ${facts.bun}, ${facts.nbdkit}, ${facts.fio}, ${facts.libnbd}; ${facts.cpus} CPUs (${facts.cpuModel})`);
  log(`policy ${policy}; rounds ${o.rounds}, runtime ${o.runtime}s + ramp ${o.ramp}s; devices ${o.devices.join(",")}; ` +
    `jobs ${o.devices.map((k) => `${k}: ${jobsFor(o, k).map((j) => j.name).join(",")}`).join("; ")}; scratch ${o.scratch} (${facts.scratchFs})`);
  log(`results -> ${resultsPath}`);
  if (o.aa) log("A/A mode: nbdkit stands in for usbd-tui");
  if (baselineCommit) log(`baseline: usbd-tui at ${baselineCommit} (${o.baseline}) runs beside the code now, as NAME@base`);

  const tlsDir = o.tls ? makePki(mkdirScratch(join(o.scratch, "pki"))).server : undefined;
  if (tlsDir !== undefined) log(`TLS required on every server, certificates in ${tlsDir}`);
  for (let round = 1; round <= o.rounds; round++) {
    for (const group of o.devices) {
      const { usbd, peers } = groups[group];
      const order: ServerName[] = round % 2 === 1 ? [usbd, ...peers] : [...peers].reverse().concat(usbd);
      const dir = join(o.scratch, `r${round}-${group}`);
      const up = new Map<ServerName, RunningServer>();
      // The objstore group's S3 server: a process of its own (its CPU is not the measured server's), data in `dir`.
      let s3: S3Child | undefined;
      // The latest gauges of each server that reports them: the "before" of its next job.
      const lastGauges = new Map<ServerName, Gauges>();
      let startError: string | undefined;
      if (group === "objstore" && !o.aa) {
        try {
          s3 = await startS3Child({ repo, bun: process.execPath, dir: join(dir, "s3rver"), pin: serverPin });
          log(`r${round} s3rver up at ${s3.endpoint} (pid ${s3.pid})`);
        } catch (e) {
          startError = `s3rver: ${(e as Error).message}`;
          log(`r${round} ${startError}`);
        }
      }
      for (const name of startError ? [] : order) {
        try {
          const s = await startServer(name, { repo: serverRoot, dir, sizeBytes: o.sizeBytes, pin: serverPin, bun: process.execPath,
            standIn: o.aa, dedupCompress: o.dedupCompress, objstoreCfg: s3?.cfgJson(),
            objstoreArgs: o.objstoreObjsize ? [`--objstore-objsize=${o.objstoreObjsize}`] : [], tls: tlsDir,
            baselineRepo: baselineRoot });
          running.add(s);
          up.set(name, s);
          servers[name] ??= { command: s.command, uri: s.uri, nbdinfo: await describe(s.uri) };
          const secs = await prefill({ uri: s.uri, pin: clientPin, outFile: join(dir, `${name}.prefill.json`) });
          // Objstore group: every export is read once before timing (warm caches, page cache included), alike.
          const warmS = group === "objstore" ? await readAll({ uri: s.uri, pin: clientPin }) : undefined;
          const gauges = await s.gauges?.(Date.now());
          if (gauges) lastGauges.set(name, gauges);
          prefills.push({ round, server: name, seconds: secs, ...(warmS !== undefined ? { warmReadSeconds: warmS } : {}), ...(gauges ? { gauges } : {}) });
          log(`r${round} ${name} up (pid ${s.pid}), prefilled in ${secs.toFixed(1)}s` +
            `${warmS !== undefined ? `, read once in ${warmS.toFixed(1)}s` : ""}${fmtGauges(gauges)}`);
        } catch (e) {
          startError = `${name}: ${(e as Error).message}`;
          log(`r${round} ${startError}`);
          break;
        }
      }
      for (const job of jobsFor(o, group)) {
        for (const [pos, name] of order.entries()) {
          const s = up.get(name);
          const row: RecordRow = { round, group, server: name, job: job.name, order: pos, startedAt: "", wallS: 0, ok: false };
          rows.push(row);
          if (!s) {
            row.error = startError ?? "server not running";
            continue;
          }
          if (o.gate > 0) row.gate = await quietGate(o.gate, 0.5, 30);
          row.startedAt = new Date().toISOString();
          const ctx = {
            uri: s.uri,
            sizeBytes: o.sizeBytes,
            runtimeS: o.runtime,
            rampS: o.ramp,
            pin: clientPin,
            outFile: join(dir, `${name}.${job.name}.json`),
          };
          const cpu0 = processCpuSeconds(s.pid);
          const box0 = sampleCpu();
          const t0 = performance.now();
          try {
            row.result = job.copy ? await runCopy(ctx) : await runFio(job, ctx);
            row.ok = true;
          } catch (e) {
            row.error = (e as Error).message;
          }
          row.wallS = (performance.now() - t0) / 1000;
          const cpu1 = processCpuSeconds(s.pid);
          const load = coresBusy(box0, sampleCpu(), row.wallS);
          row.serverCpuPct = ((cpu1 - cpu0) / row.wallS) * 100;
          row.boxCores = load.box;
          row.perCpuCores = load.perCpu;
          row.stealCores = load.steal;
          if (row.result) row.otherCores = load.box - row.serverCpuPct / 100 - row.result.clientCpuPct / 100;
          if (s.gauges) {
            // Stamped after the job ended: the store as the job left it (read after the CPU accounting above).
            const gauges = await s.gauges(Date.now());
            const before = lastGauges.get(name);
            if (before) row.gaugesBefore = before;
            if (gauges) {
              row.gauges = gauges;
              lastGauges.set(name, gauges);
            }
          }
          log(`r${round} ${name.padEnd(13)} ${job.name.padEnd(17)} ${fmtResult(row)}`);
          save();
        }
      }
      for (const [name, s] of up) {
        const st = await s.stop();
        running.delete(s);
        stops.push({ round, server: name, ...st });
        if (!st.clean) log(`r${round} ${name} did not stop cleanly: exit ${st.exitCode} signal ${st.signal}`);
        // The export's data (images, the dedup store) goes after every round, even with --keep: it is the bulk of
        // the scratch space (tmpfs, i.e. memory, by default).
        if (s.store) rmSync(s.store, { recursive: true, force: true });
      }
      if (s3) {
        await s3.stop();
        rmSync(join(dir, "s3rver"), { recursive: true, force: true });
      }
      if (!o.keep) rmSync(dir, { recursive: true, force: true });
    }
  }

  const summary = summarize(rows, groups);
  const failures = rows.filter((r) => !r.ok).length;
  const header = [
    `### usbd-tui vs nbdkit${o.devices.includes("dedup") ? " (dedup device also vs usbd-tui's mem device)" : ""}` +
      `${o.devices.includes("objstore") ? " (objstore device, warm cache, also vs usbd-tui's file device)" : ""}, ${facts.date.slice(0, 10)}`,
    "",
    `- machine: ${facts.cpus} x ${facts.cpuModel}, ${facts.memoryGiB} GiB RAM, Linux ${facts.kernel}`,
    `- bun ${facts.bun}; ${facts.nbdkit}; ${facts.fio}; ${facts.libnbd}; usbd-tui at ${facts.gitCommit}${facts.gitDirty ? ` + uncommitted changes in bin/ src/ (diff ${facts.gitDiffHash})` : ""}${o.live ? " (live tree)" : ""}`,
    `- CPU policy: ${policy}`,
    ...(baselineCommit ? [`- baseline: each usbd-tui device also ran from ${baselineCommit.slice(0, 7)} (${o.baseline}) as NAME@base, in the same rounds`] : []),
    ...(o.aa ? ["- **A/A check: nbdkit stood in for usbd-tui; these ratios measure the harness, not usbd-tui**"] : []),
    `- ${o.rounds} rounds, ${o.runtime} s per job after ${o.ramp} s ramp, ${o.sizeBytes / 2 ** 30} GiB exports prefilled by 1M writes ` +
      `of fixed random content and a flush${o.dedupCompress ? `; dedup --dedup-compress=${o.dedupCompress}` : ""}` +
      `${o.devices.includes("objstore") ? `; objstore: s3rver on loopback, --objstore-flush-mode=remote, ` +
        `--objstore-objsize=${o.objstoreObjsize ?? "default (4MiB)"}, every export of the group read once before timing` : ""}; ` +
      `files on ${o.scratch} (${facts.scratchFs})${failures ? `; **${failures} failed measurements**` : ""}`,
  ];
  const md = markdown(summary, header, groups);
  save({ summary, markdown: md });
  process.stdout.write(`\n${md}\n\nraw results: ${resultsPath}\n`);
  const unclean = stops.filter((s) => !s.clean);
  if (unclean.length) process.stdout.write(`note: ${unclean.length} server stop(s) were not clean (see "stops" in the JSON)\n`);
  if (!o.keep) rmSync(o.scratch, { recursive: true, force: true });
}

main().catch((e) => {
  process.stderr.write(`bench: ${(e as Error).message}\n`);
  process.exit(1);
});
