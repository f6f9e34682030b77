/**
 * Kernel calls that can block on the NBD sockets this process serves, run in a Worker so the event loop keeps
 * serving them: NBD_DO_IT (blocks until disconnect), the DISCONNECT ioctl and netlink command (the kernel writes
 * NBD_CMD_DISC to each socket before returning), and fsync of /dev/nbdN (writes back through our own sessions).
 * Running any of these on the main thread could deadlock the daemon against itself.
 */
import { LibcError } from "../../ffi/libc.ts";
import { workerEntry } from "../../shared/worker-entry.ts";

export type BlockingCall =
  | { readonly op: "ioctl"; readonly fd: number; readonly request: number; readonly arg: number }
  | { readonly op: "netlink-disconnect"; readonly index: number }
  | { readonly op: "fsync"; readonly path: string };

/** What the worker posts back. */
export type BlockingResult =
  | { readonly ok: true; readonly result: number }
  | { readonly ok: false; readonly call?: string; readonly errno?: number; readonly detail?: string; readonly message: string };

/** Runs one call in a fresh Worker; resolves with its result, rejects with its error (a LibcError when it has an errno). */
export function runBlocking(call: BlockingCall): Promise<number> {
  const worker = new Worker(workerEntry("src/engine/kernel/blocking-worker.ts").href);
  // A worker parked in NBD_DO_IT must not keep the process alive on its own.
  worker.unref();
  return new Promise<number>((resolve, reject) => {
    worker.onmessage = (event: MessageEvent<BlockingResult>) => {
      worker.terminate();
      const r = event.data;
      if (r.ok) resolve(r.result);
      else if (r.call !== undefined && r.errno !== undefined) reject(new LibcError(r.call, r.errno, r.detail ?? ""));
      else reject(new Error(r.message));
    };
    worker.onerror = (event: ErrorEvent) => {
      worker.terminate();
      reject(new Error(`${call.op} worker failed: ${event.message}`));
    };
    worker.postMessage(call);
  });
}
