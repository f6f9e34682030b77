/**
 * `bun bench/lib/objstore-upload-latency.ts [--rounds N] [--qd a,b]`: issue 19's objstore target, 4 KiB random write
 * latency (p99) while an upload round runs against the same job with no upload running. A daemon of its own
 * (`usbd-tui --headless --dev-type=objstore`, 64 MiB objects, lz4, aes-gcm, remote flush mode, no timed uploads)
 * on an s3rver child, both on loopback; fio's nbd engine over a Unix socket. Per round and queue depth:
 *   idle:   every object stored (a remote FLUSH returned, then 2 s), then the 4 KiB job (32 MiB in a 64 MiB region: it fits
 *           in the open object, so nothing is sealed or uploaded while it runs);
 *   upload: a sequential 1 MiB fill of 512 MiB (8 objects sealed, their upload round starts), then at once the same
 *           4 KiB job; the FLUSH after it says how long the round still ran after the job ended.
 * Run under /work/tools/cpu-exclusive. Prints a Markdown table (medians over rounds).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { startS3Child } from "./s3rver-child.ts";

const REPO = resolve(import.meta.dir, "../..");
const BUN = process.execPath;
const args = process.argv.slice(2);
const arg = (name: string, fallback: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1]! : fallback;
};
const rounds = Number(arg("rounds", "3"));
const depths = arg("qd", "1,16").split(",").map(Number);

const work = mkdtempSync(join(process.env.BENCH_SCRATCH ?? (process.platform === "linux" ? "/dev/shm" : tmpdir()), "usbd-upload-latency-"));
const socket = join(work, "nbd.sock");
const s3 = await startS3Child({ repo: REPO, bun: BUN, dir: join(work, "s3") });
const env = { ...process.env, AWS_EC2_METADATA_DISABLED: "true" };
const daemon = Bun.spawn(
  [
    BUN, join(REPO, "bin/usbd-tui.ts"), "--headless", "--dev-type=objstore", "--store-size=2GiB", `--store-dir=${join(work, "cache")}`,
    "--store-name=vol", "--listen", `unix:${socket}`, "--objstore-kind=s3", "--objstore-cfg", s3.cfgJson(), "--objstore-objsize=64MiB",
    "--objstore-compress=lz4", "--objstore-aesmode=aes-gcm", "--objstore-flushevery=0", "--objstore-flush-mode=remote", "--objstore-gc-threshold=0",
  ],
  { env, stdout: Bun.file(join(work, "daemon.log")), stderr: Bun.file(join(work, "daemon.err")) },
);
const uri = `nbd+unix:///vol?socket=${socket}`;

async function run(cmd: string[], extraEnv: Record<string, string> = {}): Promise<string> {
  const p = Bun.spawn(cmd, { env: { ...env, ...extraEnv }, stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  if (code !== 0) throw new Error(`${cmd[0]} exited with ${code}: ${err.trim().slice(-800)}`);
  return out;
}

/** fio prints warnings ("fio: ...") before its JSON on stdout. */
const jsonPart = (out: string) => out.slice(out.indexOf("{"));

async function fio(lines: string[]): Promise<{ p50: number; p99: number; iops: number }> {
  const file = join(work, "job.fio");
  await Bun.write(file, ["[global]", "ioengine=nbd", `uri=${uri}`, "direct=1", "[job]", ...lines, ""].join("\n"));
  const out = JSON.parse(jsonPart(await run(["fio", "--output-format=json", file]))) as { jobs: { write: { iops: number; clat_ns: { percentile: Record<string, number> } } }[] };
  const w = out.jobs[0]!.write;
  return { p50: w.clat_ns.percentile["50.000000"]! / 1000, p99: w.clat_ns.percentile["99.000000"]! / 1000, iops: w.iops };
}

/** A remote FLUSH: returns once every object is in the store; resolves to how long that took (ms). */
async function flush(): Promise<number> {
  const t0 = performance.now();
  // Debian's python3 (with the nbd module), not a pyenv shim earlier on PATH.
  await run(["nbdsh", "-u", uri, "-c", "h.flush()"], { PATH: `/usr/bin:${process.env.PATH ?? ""}` });
  return performance.now() - t0;
}

const smallJob = (qd: number) => ["rw=randwrite", "bs=4k", `iodepth=${qd}`, "offset=1536m", "size=64m", "io_size=32m", "randrepeat=0", "buffer_compress_percentage=50"];
const fill = ["rw=write", "bs=1m", "iodepth=8", "offset=0", "size=512m", "buffer_compress_percentage=50"];

for (let i = 0; ; i++) {
  try {
    await run(["nbdinfo", "--size", uri]);
    break;
  } catch (e) {
    if (i > 200) throw e;
    await Bun.sleep(100);
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const rows: string[] = [];
try {
  await fio(fill);
  // Both jobs overwrite a region that holds data already, so neither pays for first writes.
  await fio(["rw=write", "bs=1m", "iodepth=8", "offset=1536m", "size=64m"]);
  await flush();
  for (const qd of depths) {
    const idle: number[] = [];
    const busy: number[] = [];
    const idle50: number[] = [];
    const busy50: number[] = [];
    const tails: number[] = [];
    for (let r = 0; r < rounds; r++) {
      await flush();
      // The checkpoint a stored round may start has its seconds too: "idle" is idle.
      await Bun.sleep(2000);
      const a = await fio(smallJob(qd));
      idle.push(a.p99);
      idle50.push(a.p50);
      await flush();
      await fio(fill);
      const b = await fio(smallJob(qd));
      busy.push(b.p99);
      busy50.push(b.p50);
      tails.push(await flush());
    }
    const ratio = median(busy) / median(idle);
    rows.push(`| 4k randwrite QD${qd} | ${median(idle50).toFixed(0)} / ${median(idle).toFixed(0)} | ${median(busy50).toFixed(0)} / ${median(busy).toFixed(0)} | ${ratio.toFixed(2)}x | ${(median(tails) / 1000).toFixed(1)} s |`);
    console.error(`qd${qd}: idle p99 ${idle.map((x) => x.toFixed(0)).join(",")} us; upload p99 ${busy.map((x) => x.toFixed(0)).join(",")} us; round ran on ${tails.map((x) => (x / 1000).toFixed(1)).join(",")} s after`);
  }
} finally {
  daemon.kill("SIGTERM");
  await daemon.exited;
  await s3.stop();
  if (!args.includes("--keep")) rmSync(work, { recursive: true, force: true });
}
console.log(`${rounds} rounds, medians; p50 / p99 in us; "round after" = how long the upload round still ran after the job ended (the remote FLUSH)`);
console.log("| job | no upload: p50 / p99 | upload round running: p50 / p99 | p99 ratio | round after |");
console.log("| --- | ---: | ---: | ---: | ---: |");
for (const row of rows) console.log(row);
