/**
 * fio's NBD engine drives the daemon with concurrent mixed random I/O and checks every block it wrote (crc32c), and
 * a fio run with known counts must match the daemon's own final JSON totals exactly. Why the verify job looks the
 * way it does is explained in fio-jobs.ts.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { join } from "node:path";
import { type FioDir, type FioJob, fio, randrwVerifyJob } from "./fio-jobs.ts";
import { type Daemon, DEV_TYPES, SERVER, removeDir, runResult, stopAndRemove, skipReason, startDaemon, tempDir } from "./helpers.ts";

// Real clients and a real daemon: bun's 5 s default is too short (bunfig.toml has no per-test timeout setting).
setDefaultTimeout(90_000);

const skip = skipReason("fio suite", ["fio"]);
const JOBS = 4;
const REGION_MIB = 128;

function verifyJob(uri: string): string {
  return randrwVerifyJob(uri, { jobs: JOBS, regionMiB: REGION_MIB, loops: 20 });
}

for (const devType of DEV_TYPES) {
  describe.skipIf(skip !== undefined)(`fio randrw with crc32c verify on the ${devType} device`, () => {
    let daemon: Daemon;
    let work: string;

    beforeAll(async () => {
      work = tempDir("fio");
      daemon = await startDaemon({ devType, size: "1GiB", storeDir: work });
    });

    afterAll(() => stopAndRemove(daemon, work));

    test(`${JOBS} concurrent jobs, each in its own region, read back every block they wrote intact`, async () => {
      const jobs = await fio(work, "randrw-verify", verifyJob(daemon.uri));
      expect(jobs).toHaveLength(JOBS);
      for (const job of jobs) {
        expect(job.error).toBe(0);
        expect(job.write.io_bytes).toBeGreaterThan(0);
        // Verification reads every written block again, so reads cover at least what was written.
        expect(job.read.io_bytes).toBeGreaterThanOrEqual(job.write.io_bytes);
      }
    });

    test("the same verify job fails when the data is not what fio wrote (the check can fail)", async () => {
      // verify_only reads and checks without writing first; on a region nobody wrote, every block is wrong.
      const fresh = verifyJob(daemon.uri).replace("loops=20", "loops=1").replace("[global]", "[global]\nverify_only=1\noffset=512m");
      const path = join(work, "verify-only.fio");
      await Bun.write(path, fresh.replace(`numjobs=${JOBS}`, "numjobs=1"));
      const r = await runResult(["fio", "--output-format=json", `--output=${join(work, "verify-only.json")}`, path], { cwd: work });
      expect(r.exitCode).not.toBe(0);
      expect(r.stderr).toContain("verify:");
    });
  });
}

describe.skipIf(skip !== undefined || SERVER === "nbdkit")("the daemon's final JSON totals match fio's own counts", () => {
  let daemon: Daemon;
  let work: string;

  beforeAll(async () => {
    work = tempDir("fio-metrics");
    daemon = await startDaemon({ devType: "mem", size: "1GiB", storeDir: work, statsIntervalS: 1 });
  });

  afterAll(() => {
    daemon?.kill();
    removeDir(work);
  });

  test("read, write and trim ops and bytes in the final line equal fio's totals", async () => {
    // Sequenced jobs (stonewall) with fixed sizes: 8192 4k random writes, 1024 16k random reads, 128 64k trims.
    const jobs = await fio(
      work,
      "metrics",
      `[global]
ioengine=nbd
uri=${daemon.uri}
iodepth=8
[writes]
rw=randwrite
bs=4k
size=32m
[reads]
stonewall
rw=randread
bs=16k
size=16m
[trims]
stonewall
rw=randtrim
bs=64k
offset=64m
size=8m
`,
    );
    const sum = (pick: (j: FioJob) => FioDir) => ({
      ops: jobs.reduce((n, j) => n + pick(j).total_ios, 0),
      bytes: jobs.reduce((n, j) => n + pick(j).io_bytes, 0),
    });
    const fioTotals = { read: sum((j) => j.read), write: sum((j) => j.write), trim: sum((j) => j.trim) };
    // fio did what the job file says, so any mismatch below is the daemon's counting.
    expect(fioTotals).toEqual({
      read: { ops: 1024, bytes: 16 * 1024 * 1024 },
      write: { ops: 8192, bytes: 32 * 1024 * 1024 },
      trim: { ops: 128, bytes: 8 * 1024 * 1024 },
    });

    // --stats-interval 1 prints a stats line every second; wait for one before stopping.
    const deadline = Date.now() + 5000;
    while (!daemon.stdout().includes('"type":"stats"') && Date.now() < deadline) await Bun.sleep(50);
    const stdout = await daemon.stop();
    const lines = stdout
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as { type: string; totals: Record<string, { ops: number; bytes: number; errors: number }> });
    expect(lines.some((l) => l.type === "stats")).toBe(true);
    const final = lines.filter((l) => l.type === "final");
    expect(final).toHaveLength(1);
    const t = final[0]!.totals;
    expect({
      read: { ops: t.read!.ops, bytes: t.read!.bytes },
      write: { ops: t.write!.ops, bytes: t.write!.bytes },
      trim: { ops: t.trim!.ops, bytes: t.trim!.bytes },
    }).toEqual(fioTotals);
    expect([t.read!.errors, t.write!.errors, t.trim!.errors]).toEqual([0, 0, 0]);
  });
});
