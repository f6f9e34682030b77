// Jobs for the worker pool's tests: small pure functions, and a few that fail in each way a job can.
import crypto from "node:crypto";

export const poolTestJobs = {
  /** Returns its input: measures the hand-off alone. */
  echo: (input: { readonly data: Uint8Array }) => input,
  /** SHA-256 of the buffer, and the buffer's length as the worker saw it. */
  sha256: (input: { readonly data: Uint8Array }) => ({ digest: new Uint8Array(crypto.createHash("sha256").update(input.data).digest()), length: input.data.length }),
  /** A fresh buffer of `length` bytes of `fill`, moved back to the caller. */
  fill: (input: { readonly length: number; readonly fill: number }) => new Uint8Array(input.length).fill(input.fill),
  /** Busy for `ms` milliseconds, then tells when it started and ended (the worker's clock is the same as the caller's). */
  spin: (input: { readonly ms: number }) => {
    const started = performance.timeOrigin + performance.now();
    while (performance.timeOrigin + performance.now() - started < input.ms) {
      // Spinning is the point: the serving thread must stay free meanwhile.
    }
    return { started, ended: performance.timeOrigin + performance.now() };
  },
  fail: (input: { readonly message: string }): never => {
    throw new RangeError(input.message);
  },
  /** Kills its own worker thread mid-job (what a crash in native code looks like to the pool). */
  die: (_input: null): never => {
    process.exit(3);
  },
};
