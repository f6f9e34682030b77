/**
 * SHA-256 of large writes on the shared worker pool, so the serving thread answers other requests (reads above all)
 * while the other core hashes. SHA-256 was the largest single cost of storing new data (about 40% of it), and the
 * pool's round trip (about 20 us, docs/ARCHITECTURE.md "Worker threads") pays from 64 KiB of blocks on; smaller
 * writes hash inline. When the pool is full a write waits for a place rather than hashing inline: inline, a burst
 * of 1 MiB writes kept the serving thread busy for hundreds of milliseconds and reads waited behind it. A failed job
 * (a dead worker) costs nothing but the inline hash.
 */
import { workerEntry } from "../../shared/worker-entry.ts";
import { acquireWorkerPool, type WorkerPoolLease } from "../../shared/worker-pool.ts";
import type { dedupJobs } from "./hash-jobs.ts";

/** Writes whose whole blocks are smaller than this hash inline (the hand-off would cost more than it saves). */
export const OFF_THREAD_MIN_BYTES = 64 * 1024;

/** The hashes of a write's whole blocks, from block `first` on, 32 bytes each. */
export interface BlockHashes {
  readonly first: number;
  readonly hashes: Uint8Array;
}

export class OffThreadHasher {
  private lease: WorkerPoolLease<typeof dedupJobs> | undefined;
  /** Blocks hashed by the pool, for the stats and the tests. */
  blocks = 0;

  constructor(private readonly blockSize: number) {}

  /**
   * Starts hashing the whole blocks of a write of `data` at byte `offset`; undefined when they are too few (hash
   * inline). The promise gives undefined when the job failed.
   */
  start(offset: number, data: Uint8Array): Promise<BlockHashes | undefined> | undefined {
    const bs = this.blockSize;
    const first = Math.ceil(offset / bs);
    const end = Math.floor((offset + data.length) / bs);
    if ((end - first) * bs < OFF_THREAD_MIN_BYTES) return undefined;
    // The engine reuses `data` after the write completes and it may be a view of a larger buffer: the worker gets
    // a copy it owns, moved (not copied again) by the transfer.
    const copy = new Uint8Array((end - first) * bs);
    copy.set(data.subarray(first * bs - offset, end * bs - offset));
    this.lease ??= acquireWorkerPool<typeof dedupJobs>(workerEntry("src/devices/dedup/hash-worker.ts"));
    const job = this.lease.pool.run("hashBlocks", { data: copy, blockSize: bs }, [copy.buffer]).then(
      (hashes) => {
        this.blocks += end - first;
        return { first, hashes };
      },
      () => undefined,
    );
    // Results arrive faster than the serving thread stores them; handing each over through setImmediate lets the
    // event loop take other requests between two of them instead of draining every result first.
    return job.then((hashed) => new Promise<BlockHashes | undefined>((resolve) => setImmediate(() => resolve(hashed))));
  }

  close(): void {
    this.lease?.release();
    this.lease = undefined;
  }
}
