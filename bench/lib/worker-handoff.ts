/**
 * `bun bench/lib/worker-handoff.ts`: what handing a job to the worker pool costs on this machine, the number that
 * decides which work moves off the serving thread (docs/ARCHITECTURE.md, "Worker threads"). Round trips of an empty
 * job and of 64 KiB / 4 MiB buffers moved there and back (transferred, and copied for comparison), one at a time,
 * medians and p99 over many; then, for the sizes the objstore seals, AES-256-GCM inline for comparison.
 */
import crypto from "node:crypto";
import { compressSync } from "lz4-napi";
import { WorkerPool } from "../../src/shared/worker-pool.ts";
import type { poolTestJobs } from "../../tests/shared/pool-jobs.ts";

const pool = new WorkerPool<typeof poolTestJobs>(new URL("../../tests/shared/pool-worker.ts", import.meta.url), { size: 1 });
const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))]!;
const us = (ms: number) => `${(ms * 1000).toFixed(1)} us`;

async function measure(label: string, runs: number, once: () => Promise<unknown>): Promise<void> {
  for (let i = 0; i < Math.min(50, runs); i++) await once();
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    await once();
    times.push(performance.now() - t0);
  }
  console.log(`${label.padEnd(34)} median ${us(pct(times, 0.5)).padStart(10)}  p99 ${us(pct(times, 0.99)).padStart(10)}`);
}

function inline(label: string, runs: number, once: () => void): void {
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    once();
    times.push(performance.now() - t0);
  }
  console.log(`${label.padEnd(34)} median ${us(pct(times, 0.5)).padStart(10)}  p99 ${us(pct(times, 0.99)).padStart(10)}`);
}

await measure("empty job (round trip)", 2000, () => pool.run("echo", { data: new Uint8Array(0) }));
for (const [name, size, runs] of [["64 KiB", 64 << 10, 1000], ["4 MiB", 4 << 20, 200]] as const) {
  let buf: Uint8Array = new Uint8Array(size);
  await measure(`${name} transferred there and back`, runs, async () => {
    const back = await pool.run("echo", { data: buf }, [buf.buffer as ArrayBuffer]);
    buf = back.data;
  });
  const posts: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    const job = pool.tryRun("echo", { data: buf }, [buf.buffer as ArrayBuffer])!;
    posts.push(performance.now() - t0);
    buf = (await job).data;
  }
  console.log(`${`${name} post, caller's thread only`.padEnd(34)} median ${us(pct(posts, 0.5)).padStart(10)}  p99 ${us(pct(posts, 0.99)).padStart(10)}`);
  const kept = new Uint8Array(size);
  await measure(`${name} copied there and back`, runs, () => pool.run("echo", { data: kept }));
  const key = crypto.randomBytes(32);
  const data = crypto.randomBytes(size);
  inline(`${name} AES-256-GCM inline`, runs, () => {
    const c = crypto.createCipheriv("aes-256-gcm", key, crypto.randomBytes(12));
    c.update(data);
    c.final();
  });
  inline(`${name} SHA-256 inline`, runs, () => crypto.createHash("sha256").update(data).digest());
  const text = Buffer.alloc(size, "a compressible phrase, repeated; ");
  inline(`${name} lz4 (compressible) inline`, runs, () => compressSync(text));
}
pool.close();
