/**
 * A small pool of Bun Worker threads that runs CPU-heavy pure functions (seal a log object, open chunks, hash blocks)
 * off the serving thread, so that thread keeps answering requests while the other core works.
 *
 * How to use it (the objstore codec is the example: src/devices/objstore/codec/seal-jobs.ts and seal-worker.ts):
 * 1. Put the pure functions in one module as a table, `export const myJobs = { hashBlocks, ... }`: each takes one
 *    structured-cloneable argument and returns (or resolves to) a structured-cloneable value.
 * 2. A worker entry file next to it holds one line, `serveJobs(myJobs)` (src/shared/worker-jobs.ts), and is listed
 *    in scripts/build-binary.ts's entry points (the compiled binary only holds the workers it is told of).
 * 3. On the serving side: `const lease = acquireWorkerPool<typeof myJobs>(workerEntry("src/.../my-worker.ts"))`
 *    (src/shared/worker-entry.ts: the same path from source and inside the compiled binary),
 *    then `await lease.pool.run("hashBlocks", input, [input.data.buffer])`, and `lease.release()` on close. Leases of
 *    one entry share one pool; its workers end when the last lease is released.
 *
 * Hand-off: an ArrayBuffer listed in `transfer` moves to the worker without a copy (the caller's view of it is
 * detached afterwards, so pass buffers the caller owns whole, never a slice of a shared one); in the result, every
 * Uint8Array/ArrayBuffer that owns its whole buffer (top level, or one level inside an object or array) moves back the
 * same way. A job costs a round trip (measured in docs/ARCHITECTURE.md, "Worker threads"), so only work of a size that
 * pays for it belongs here: callers keep small jobs inline.
 *
 * Backpressure: the pool holds at most `size` running plus `maxQueued` waiting jobs. A `run` beyond that waits for a
 * place before its input is taken, so the pool never holds more than that many inputs (the caller keeps its own);
 * `tryRun` returns undefined instead, for a caller that would rather do the job itself.
 *
 * Errors come back as one-line `WorkerJobError`s carrying the job's error name (a job that throws, a worker that
 * dies, a closed pool); a dead worker is replaced on the next job. Workers are unref'd, so they never keep the
 * process alive, and `close` terminates them (pending jobs fail with "worker pool closed").
 */
import os from "node:os";

/** The jobs a worker serves: name -> pure function of one argument. */
export type JobTable = { readonly [name: string]: (input: never) => unknown };
export type JobInput<J extends JobTable, K extends keyof J> = Parameters<J[K]>[0];
export type JobOutput<J extends JobTable, K extends keyof J> = Awaited<ReturnType<J[K]>>;

/** What a worker posts back for job `id`. */
export type JobReply = { readonly id: number; readonly ok: true; readonly value: unknown } | { readonly id: number; readonly ok: false; readonly name: string; readonly message: string };
/** What the pool posts to a worker. */
export interface JobRequest {
  readonly id: number;
  readonly job: string;
  readonly input: unknown;
}

/** A job that failed: thrown by the job (`name` is its error's name), or lost with its worker, or refused. */
export class WorkerJobError extends Error {
  constructor(
    /** The error's name in the worker ("LogObjectError", "TypeError"), or "WorkerExit" / "PoolClosed". */
    readonly kind: string,
    message: string,
  ) {
    super(message);
    this.name = "WorkerJobError";
  }
}

export interface WorkerPoolOptions {
  /** Worker threads; default: one per core but one (the serving thread's), at least 1, at most 4. */
  readonly size?: number;
  /** Jobs that may wait beyond the running ones before `run` waits too; default 4 per worker. */
  readonly maxQueued?: number;
}

interface Pending {
  readonly request: JobRequest;
  readonly transfer: ArrayBuffer[];
  readonly resolve: (value: unknown) => void;
  readonly reject: (e: Error) => void;
}

interface Slot {
  worker: Worker | undefined;
  running: Pending | undefined;
}

export function defaultPoolSize(): number {
  const cores = typeof os.availableParallelism === "function" ? os.availableParallelism() : os.cpus().length;
  return Math.max(1, Math.min(4, cores - 1));
}

const oneLine = (text: string) => text.replace(/\s*\n\s*/g, "; ").trim();

export class WorkerPool<J extends JobTable> {
  readonly size: number;
  readonly maxQueued: number;
  private readonly slots: Slot[];
  private readonly queue: Pending[] = [];
  /** `run` calls waiting for a place in the queue (their inputs are still theirs). */
  private readonly admissions: (() => void)[] = [];
  private nextId = 1;
  private closed = false;
  /** Jobs finished (ok or not), for tests and gauges. */
  completed = 0;

  constructor(
    private readonly entry: URL,
    options: WorkerPoolOptions = {},
  ) {
    this.size = Math.max(1, Math.floor(options.size ?? defaultPoolSize()));
    this.maxQueued = Math.max(0, Math.floor(options.maxQueued ?? 4 * this.size));
    this.slots = Array.from({ length: this.size }, () => ({ worker: undefined, running: undefined }));
  }

  /** Jobs running or waiting in the pool (never more than size + maxQueued). */
  get depth(): number {
    return this.queue.length + this.slots.filter((s) => s.running !== undefined).length;
  }

  /** Runs `job` on a worker; waits for a place first when the pool is full. */
  async run<K extends keyof J & string>(job: K, input: JobInput<J, K>, transfer: ArrayBuffer[] = []): Promise<JobOutput<J, K>> {
    for (;;) {
      if (this.closed) throw new WorkerJobError("PoolClosed", `worker pool closed: job ${job} not run`);
      const started = this.tryRun(job, input, transfer);
      if (started !== undefined) return await started;
      await new Promise<void>((resolve) => this.admissions.push(resolve));
    }
  }

  /** Like `run`, but undefined (nothing taken, nothing transferred) when the pool is full or closed. */
  tryRun<K extends keyof J & string>(job: K, input: JobInput<J, K>, transfer: ArrayBuffer[] = []): Promise<JobOutput<J, K>> | undefined {
    if (this.closed || this.depth >= this.size + this.maxQueued) return undefined;
    return new Promise<JobOutput<J, K>>((resolve, reject) => {
      const request: JobRequest = { id: this.nextId++, job, input };
      this.queue.push({ request, transfer, resolve: resolve as (value: unknown) => void, reject });
      this.dispatch();
    });
  }

  /** Terminates every worker; jobs running or waiting fail with a PoolClosed error. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    const lost = [...this.queue.splice(0), ...this.slots.flatMap((s) => (s.running === undefined ? [] : [s.running]))];
    for (const slot of this.slots) {
      slot.worker?.terminate();
      slot.worker = undefined;
      slot.running = undefined;
    }
    for (const p of lost) p.reject(new WorkerJobError("PoolClosed", `worker pool closed: job ${p.request.job} not finished`));
    for (const admit of this.admissions.splice(0)) admit();
  }

  private dispatch(): void {
    for (const slot of this.slots) {
      if (this.queue.length === 0) break;
      if (slot.running !== undefined) continue;
      const next = this.queue.shift()!;
      slot.running = next;
      const worker = slot.worker ?? this.spawn(slot);
      // Held while it works (a script awaiting a job must not exit under it), unref'd again when idle.
      worker.ref();
      try {
        worker.postMessage(next.request, next.transfer);
      } catch (e) {
        slot.running = undefined;
        worker.unref();
        this.settled();
        next.reject(new WorkerJobError("DataCloneError", `job ${next.request.job}: input cannot go to a worker: ${oneLine(e instanceof Error ? e.message : String(e))}`));
      }
    }
  }

  private spawn(slot: Slot): Worker {
    const worker = new Worker(this.entry.href);
    worker.unref();
    slot.worker = worker;
    worker.onmessage = (event: MessageEvent<JobReply>) => {
      const p = slot.running;
      const reply = event.data;
      if (p === undefined || p.request.id !== reply.id) return;
      slot.running = undefined;
      worker.unref();
      this.settled();
      if (reply.ok) p.resolve(reply.value);
      else p.reject(new WorkerJobError(reply.name, reply.message));
    };
    // A worker that dies (an uncaught error, a crash in native code) fails its job, not the process; the slot gets
    // a fresh worker on its next job.
    const lose = (why: string) => {
      if (slot.worker !== worker) return;
      worker.terminate();
      slot.worker = undefined;
      const p = slot.running;
      slot.running = undefined;
      if (p !== undefined) {
        this.settled();
        p.reject(new WorkerJobError("WorkerExit", `job ${p.request.job}: the worker ${why}`));
      }
    };
    worker.onerror = (event: ErrorEvent) => {
      event.preventDefault();
      lose(`failed: ${oneLine(event.message)}`);
    };
    worker.addEventListener("close", () => lose("exited"));
    return worker;
  }

  private settled(): void {
    this.completed++;
    queueMicrotask(() => {
      this.dispatch();
      while (this.admissions.length > 0 && this.depth < this.size + this.maxQueued) this.admissions.shift()!();
    });
  }
}

interface Shared {
  readonly pool: WorkerPool<JobTable>;
  leases: number;
}
const shared = new Map<string, Shared>();

/** A share of the process-wide pool for one worker entry; `release` once, when the user closes. */
export interface WorkerPoolLease<J extends JobTable> {
  readonly pool: WorkerPool<J>;
  release(): void;
}

/** The pool for `entry` (created on first use with `options`), shared by every holder of a lease on it. */
export function acquireWorkerPool<J extends JobTable>(entry: URL, options: WorkerPoolOptions = {}): WorkerPoolLease<J> {
  let s = shared.get(entry.href);
  if (s === undefined) {
    s = { pool: new WorkerPool<JobTable>(entry, options), leases: 0 };
    shared.set(entry.href, s);
  }
  s.leases++;
  const held = s;
  let released = false;
  return {
    pool: held.pool as unknown as WorkerPool<J>,
    release() {
      if (released) return;
      released = true;
      if (--held.leases === 0) {
        held.pool.close();
        if (shared.get(entry.href) === held) shared.delete(entry.href);
      }
    },
  };
}
