/**
 * fio with libaio and O_DIRECT on /dev/nbdX, every block verified with crc32c after it is written: deep kernel
 * queues over several connections (mem, netlink) and the ioctl path (file).
 */
import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { removeDir, requireVm, runResult, startKernelDaemon, storeDirectory } from "./helpers.ts";

requireVm();
setDefaultTimeout(300_000);

const stores: string[] = [];
afterAll(() => {
  for (const dir of stores) removeDir(dir);
});

interface FioJob {
  readonly jobname: string;
  readonly error: number;
  readonly read: { readonly io_bytes: number };
  readonly write: { readonly io_bytes: number };
}

async function fioVerify(device: string): Promise<FioJob[]> {
  const common = ["--ioengine=libaio", "--direct=1", "--verify=crc32c", "--do_verify=1", "--verify_fatal=1", "--verify_state_save=0", `--filename=${device}`];
  const r = await runResult(
    [
      "fio",
      "--output-format=json",
      ...common,
      "--name=rand4k",
      "--rw=randwrite",
      "--bs=4k",
      "--iodepth=32",
      "--size=32M",
      "--name=seq1m",
      "--stonewall",
      "--rw=write",
      "--bs=1M",
      "--iodepth=8",
      "--offset=64M",
      "--size=64M",
    ],
    { timeoutMs: 240_000 },
  );
  if (r.exitCode !== 0) throw new Error(`fio exited with ${r.exitCode}\n${r.stderr}\n${r.stdout.slice(-3000)}`);
  return (JSON.parse(r.stdout.slice(r.stdout.indexOf("{"))) as { jobs: FioJob[] }).jobs;
}

for (const setup of [
  { devType: "mem", iface: "netlink", connections: 2 },
  { devType: "file", iface: "ioctl", connections: 1 },
] as const) {
  describe(`${setup.devType} device, ${setup.iface}, ${setup.connections} connection(s)`, () => {
    test("fio randwrite 4k QD32 and sequential 1M writes read back and verify with crc32c", async () => {
      const storeDir = storeDirectory();
      stores.push(storeDir);
      const daemon = await startKernelDaemon({ ...setup, storeDir });
      try {
        const jobs = await fioVerify(daemon.path);
        expect(jobs.map((j) => j.jobname)).toEqual(["rand4k", "seq1m"]);
        for (const job of jobs) {
          expect(job.error).toBe(0);
          // Everything written was read back for verification.
          expect(job.read.io_bytes).toBe(job.write.io_bytes);
          expect(job.write.io_bytes).toBeGreaterThan(0);
        }
      } finally {
        expect(await daemon.stop()).toBe(0);
      }
    });
  });
}
