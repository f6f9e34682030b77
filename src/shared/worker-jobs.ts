/**
 * The worker side of src/shared/worker-pool.ts: a worker entry file calls `serveJobs(table)` once, and each request
 * runs the named pure function and posts its value (transferring the buffers it owns whole) or a one-line error.
 */
import type { JobReply, JobRequest, JobTable } from "./worker-pool.ts";

declare const self: Worker;

/** Buffers in `value` that own their whole ArrayBuffer (top level, or one level in an object or array). */
export function transferablesOf(value: unknown): ArrayBuffer[] {
  const out = new Set<ArrayBuffer>();
  const take = (v: unknown) => {
    if (v instanceof ArrayBuffer) out.add(v);
    else if (ArrayBuffer.isView(v) && v.buffer instanceof ArrayBuffer && v.byteOffset === 0 && v.byteLength === v.buffer.byteLength) out.add(v.buffer);
  };
  take(value);
  if (Array.isArray(value)) value.forEach(take);
  else if (value !== null && typeof value === "object" && !ArrayBuffer.isView(value)) Object.values(value).forEach(take);
  return [...out];
}

/** Serves `jobs` in this worker: one request at a time, as the pool sends them. */
export function serveJobs(jobs: JobTable): void {
  self.onmessage = async (event: MessageEvent<JobRequest>) => {
    const { id, job, input } = event.data;
    let reply: JobReply;
    try {
      const fn = Object.hasOwn(jobs, job) ? jobs[job] : undefined;
      if (fn === undefined) throw new TypeError(`no job named ${job} in this worker`);
      const value = await (fn as (input: unknown) => unknown)(input);
      self.postMessage({ id, ok: true, value } satisfies JobReply, transferablesOf(value));
      return;
    } catch (e) {
      const name = e instanceof Error ? e.name : "Error";
      const message = (e instanceof Error ? e.message : String(e)).replace(/\s*\n\s*/g, "; ").trim();
      reply = { id, ok: false, name, message };
    }
    self.postMessage(reply);
  };
}
