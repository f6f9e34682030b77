/**
 * The bound on memory the server holds for its clients: request payloads, data read for replies, and reply bytes
 * the sockets have not taken yet. One budget serves the whole process, so N slow or hostile readers share one limit
 * instead of multiplying it; each connection has an account that stops reading requests while it is over its share,
 * and reading resumes as replies drain or requests finish.
 *
 * The rule for taking `bytes` more, for a connection that already holds `held`:
 * - a connection that holds nothing may always take up to `guaranteed` bytes, so every client keeps making progress
 *   (one small request at a time) even while others have used the whole budget;
 * - otherwise the connection must stay within `perConnection` (unless it holds nothing: a single request larger
 *   than that is served alone), and the process within `limit`.
 * So the memory held is at most `limit + connections * guaranteed`.
 */

/** Defaults: sized so the benchmarks' deepest queues (QD32 of 4 KiB, QD8 of 1 MiB, the kernel's 128 requests) never wait. */
export const DEFAULT_MEMORY_LIMIT = 256 * 1024 * 1024;
export const DEFAULT_PER_CONNECTION = 32 * 1024 * 1024;
export const DEFAULT_GUARANTEED = 256 * 1024;
/** The smallest limit that still serves the kernel, which sends requests of up to 32 MiB. */
export const MIN_MEMORY_LIMIT = 32 * 1024 * 1024;

export interface MemoryBudgetOptions {
  /** Bytes the whole process may hold for clients. */
  readonly limit?: number;
  /** Bytes one connection may hold (capped at `limit`). */
  readonly perConnection?: number;
  /** Bytes a connection holding nothing may always take. */
  readonly guaranteed?: number;
}

/** Something waiting for room: called (from a later turn of the event loop) when the budget has shrunk. */
export type RoomWaiter = () => void;

export class MemoryBudget {
  readonly limit: number;
  readonly perConnection: number;
  readonly guaranteed: number;
  /** Bytes held now, across every account. */
  used = 0;
  /** The most `used` has been, for tests and the documentation of the bound. */
  peak = 0;
  private readonly waiters = new Set<RoomWaiter>();
  private wakeScheduled = false;

  constructor(options: MemoryBudgetOptions = {}) {
    this.limit = options.limit ?? DEFAULT_MEMORY_LIMIT;
    this.perConnection = Math.min(options.perConnection ?? DEFAULT_PER_CONNECTION, this.limit);
    this.guaranteed = Math.min(options.guaranteed ?? DEFAULT_GUARANTEED, this.perConnection);
  }

  /** Whether an account holding `held` bytes may take `bytes` more. */
  allows(held: number, bytes: number): boolean {
    if (held === 0 && bytes <= this.guaranteed) return true;
    if (held > 0 && held + bytes > this.perConnection) return false;
    return this.used + bytes <= this.limit;
  }

  /** Records `delta` bytes taken (positive) or given back (negative) by some account. */
  change(delta: number): void {
    this.used += delta;
    if (this.used > this.peak) this.peak = this.used;
    if (delta < 0 && this.waiters.size > 0 && !this.wakeScheduled) {
      // One sweep per turn of the event loop, however many replies drained in it.
      this.wakeScheduled = true;
      setImmediate(() => this.wake());
    }
  }

  /** Calls `waiter` once the budget next shrinks (until `cancel`). */
  wait(waiter: RoomWaiter): void {
    this.waiters.add(waiter);
  }

  cancel(waiter: RoomWaiter): void {
    this.waiters.delete(waiter);
  }

  private wake(): void {
    this.wakeScheduled = false;
    // Oldest first; a waiter that gets room removes itself, one that does not stays for the next sweep.
    for (const waiter of [...this.waiters]) {
      if (this.used >= this.limit) break;
      waiter();
    }
  }
}

/**
 * One connection's share of a MemoryBudget. The connection reports what it holds with `hold(bytes)` whenever that
 * changes; the account passes the difference on to the budget.
 */
export class BudgetAccount {
  private held = 0;

  constructor(readonly budget: MemoryBudget) {}

  get bytes(): number {
    return this.held;
  }

  /** The connection now holds `bytes` in all. */
  hold(bytes: number): void {
    if (bytes === this.held) return;
    this.budget.change(bytes - this.held);
    this.held = bytes;
  }

  /** Gives everything back (the connection ended). */
  close(): void {
    this.hold(0);
  }
}

/** The budget every listener and kernel attachment shares unless given its own; `configure` sets it from the flags. */
let processBudget = new MemoryBudget();

export function sharedMemoryBudget(): MemoryBudget {
  return processBudget;
}

/** Replaces the process-wide budget (before anything is served): the `--max-buffer` flag. */
export function configureSharedMemoryBudget(options: MemoryBudgetOptions): MemoryBudget {
  processBudget = new MemoryBudget(options);
  return processBudget;
}
