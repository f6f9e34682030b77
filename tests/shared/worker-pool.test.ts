// The shared worker pool (src/shared/worker-pool.ts) with real Bun Workers running the jobs in pool-jobs.ts.
import { afterEach, describe, expect, test } from "bun:test";
import { acquireWorkerPool, WorkerJobError, WorkerPool } from "../../src/shared/worker-pool.ts";
import type { poolTestJobs } from "./pool-jobs.ts";

const ENTRY = new URL("./pool-worker.ts", import.meta.url);
type Jobs = typeof poolTestJobs;
const pools: WorkerPool<Jobs>[] = [];
const newPool = (size = 1, maxQueued?: number) => {
  const pool = new WorkerPool<Jobs>(ENTRY, maxQueued === undefined ? { size } : { size, maxQueued });
  pools.push(pool);
  return pool;
};
afterEach(() => {
  for (const p of pools.splice(0)) p.close();
});

describe("jobs run on a worker and their buffers move instead of being copied", () => {
  test("a transferred input is detached on the caller's side, and the worker saw all of it", async () => {
    const pool = newPool();
    const data = new Uint8Array(1 << 20).fill(7);
    const result = await pool.run("sha256", { data }, [data.buffer]);
    expect(data.byteLength).toBe(0);
    expect(result.length).toBe(1 << 20);
    expect(Buffer.from(result.digest).toString("hex")).toBe(new Bun.CryptoHasher("sha256").update(new Uint8Array(1 << 20).fill(7)).digest("hex"));
  });

  test("a result buffer comes back whole and usable", async () => {
    const pool = newPool();
    const back = await pool.run("fill", { length: 4 << 20, fill: 9 });
    expect(back.length).toBe(4 << 20);
    expect(back[0]).toBe(9);
    expect(back[(4 << 20) - 1]).toBe(9);
  });

  test("an input not listed for transfer is copied and stays the caller's", async () => {
    const pool = newPool();
    const data = new Uint8Array(100).fill(1);
    const back = await pool.run("echo", { data });
    expect(data.byteLength).toBe(100);
    expect(back.data).toEqual(data);
  });
});

describe("the serving thread keeps running while a job works", () => {
  test("timers fire on the caller's thread during a 300 ms job", async () => {
    const pool = newPool();
    const ticks: number[] = [];
    const timer = setInterval(() => ticks.push(Date.now()), 10);
    const { started, ended } = await pool.run("spin", { ms: 300 });
    clearInterval(timer);
    const during = ticks.filter((t) => t > started && t < ended);
    expect(during.length).toBeGreaterThan(3);
  });
});

describe("errors come back as one-line errors and never take the caller down", () => {
  test("a job that throws rejects with its error's name and message, on one line", async () => {
    const pool = newPool();
    const e = await pool.run("fail", { message: "bad\nrange" }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(WorkerJobError);
    expect((e as WorkerJobError).kind).toBe("RangeError");
    expect((e as WorkerJobError).message).toBe("bad; range");
    expect(await pool.run("echo", { data: new Uint8Array(1) })).toEqual({ data: new Uint8Array(1) });
  });

  test("a worker that dies fails its job, and the next job gets a fresh worker", async () => {
    const pool = newPool();
    const e = await pool.run("die", null).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(WorkerJobError);
    expect((e as WorkerJobError).kind).toBe("WorkerExit");
    expect((e as Error).message).not.toContain("\n");
    expect((await pool.run("sha256", { data: new Uint8Array(3) })).length).toBe(3);
  });

  test("an input that cannot be cloned is refused with a one-line error", async () => {
    const pool = newPool();
    const e = await pool.run("echo", { data: (() => 1) as unknown as Uint8Array }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(WorkerJobError);
    expect(await pool.run("echo", { data: new Uint8Array(2) })).toEqual({ data: new Uint8Array(2) });
  });
});

describe("the queue is bounded", () => {
  test("tryRun refuses beyond size + maxQueued, and run waits for a place instead", async () => {
    const pool = newPool(1, 2);
    const first = [pool.tryRun("spin", { ms: 100 }), pool.tryRun("spin", { ms: 1 }), pool.tryRun("spin", { ms: 1 })];
    expect(first.every((p) => p !== undefined)).toBe(true);
    expect(pool.depth).toBe(3);
    expect(pool.tryRun("spin", { ms: 1 })).toBeUndefined();
    let admitted = false;
    const waiting = pool.run("spin", { ms: 1 }).then((r) => ((admitted = true), r));
    await Bun.sleep(20);
    expect(admitted).toBe(false);
    expect(pool.depth).toBe(3);
    await Promise.all([...first, waiting]);
    expect(admitted).toBe(true);
    expect(pool.completed).toBe(4);
  });

  test("many runs at once never hold more than size + maxQueued jobs in the pool", async () => {
    const pool = newPool(2, 3);
    let most = 0;
    const all = Array.from({ length: 40 }, () => pool.run("spin", { ms: 1 }).then(() => void (most = Math.max(most, pool.depth))));
    const probe = setInterval(() => (most = Math.max(most, pool.depth)), 1);
    await Promise.all(all);
    clearInterval(probe);
    expect(most).toBeLessThanOrEqual(5);
    expect(pool.completed).toBe(40);
  });
});

describe("shutdown", () => {
  test("close fails the jobs running and waiting, and later runs, with PoolClosed", async () => {
    const pool = newPool(1, 1);
    const running = pool.run("spin", { ms: 2000 }).catch((e: unknown) => e);
    const queued = pool.run("spin", { ms: 1 }).catch((e: unknown) => e);
    await Bun.sleep(50);
    pool.close();
    for (const e of [await running, await queued, await pool.run("spin", { ms: 1 }).catch((x: unknown) => x)]) {
      expect(e).toBeInstanceOf(WorkerJobError);
      expect((e as WorkerJobError).kind).toBe("PoolClosed");
    }
  });

  test("leases share one pool, which closes when the last is released", async () => {
    const a = acquireWorkerPool<Jobs>(ENTRY, { size: 1 });
    const b = acquireWorkerPool<Jobs>(ENTRY);
    expect(b.pool).toBe(a.pool);
    a.release();
    a.release();
    expect((await b.pool.run("sha256", { data: new Uint8Array(5) })).length).toBe(5);
    b.release();
    expect(await b.pool.run("echo", { data: new Uint8Array(1) }).catch((e: WorkerJobError) => e.kind)).toBe("PoolClosed");
    const c = acquireWorkerPool<Jobs>(ENTRY);
    expect(c.pool).not.toBe(a.pool);
    c.release();
  });

  test("a process whose pool was used exits on its own, idle workers do not hold it", async () => {
    const script = `import { WorkerPool } from ${JSON.stringify(new URL("../../src/shared/worker-pool.ts", import.meta.url).pathname)};
const pool = new WorkerPool(new URL(${JSON.stringify(ENTRY.href)}), { size: 2 });
const r = await pool.run("fill", { length: 8, fill: 1 });
console.log("done", r.length);`;
    const child = Bun.spawn([process.execPath, "-e", script], { stdout: "pipe", stderr: "pipe" });
    const killer = setTimeout(() => child.kill(), 4000);
    const code = await child.exited;
    clearTimeout(killer);
    expect(await new Response(child.stdout).text()).toBe("done 8\n");
    expect(code).toBe(0);
  });
});
