/**
 * Per-device counters the engine keeps while serving: operations, bytes, errors, in-flight requests, latency
 * histograms and per-second history, read through `snapshot()` by the dashboard and the headless stats line.
 * Recording is a few array increments so it can sit on the hot path.
 */
import { CMD, CMD_NAMES } from "./protocol/constants.ts";

/** Commands that metrics keep apart (indexes are the NBD command numbers). */
const COMMANDS = [CMD.READ, CMD.WRITE, CMD.FLUSH, CMD.TRIM, CMD.CACHE, CMD.WRITE_ZEROES, CMD.BLOCK_STATUS] as const;
const SLOTS = 9;

/**
 * Latency buckets in microseconds: exact below 4 us, then 4 per power of two (up to ~30 s). Computed with
 * integer bit tricks rather than Math.log2, because this runs for every request.
 */
const BUCKETS = 26 * 4;
const HISTORY_SECONDS = 60;

function bucketOf(micros: number): number {
  const m = micros >= 1 ? Math.min(micros, 2 ** 30) | 0 : 0;
  if (m < 4) return m;
  const octave = 31 - Math.clz32(m);
  const b = octave * 4 + ((m >>> (octave - 2)) & 3);
  return b >= BUCKETS ? BUCKETS - 1 : b;
}

/** Upper bound, in microseconds, of a latency bucket. */
function bucketCeiling(bucket: number): number {
  if (bucket < 4) return bucket + 1;
  const octave = bucket >> 2;
  return 2 ** octave + ((bucket & 3) + 1) * 2 ** (octave - 2);
}

function percentile(histogram: Float64Array, fraction: number): number {
  let total = 0;
  for (let i = 0; i < histogram.length; i++) total += histogram[i]!;
  if (total === 0) return 0;
  const target = total * fraction;
  let seen = 0;
  for (let i = 0; i < histogram.length; i++) {
    seen += histogram[i]!;
    if (seen >= target) return bucketCeiling(i);
  }
  return bucketCeiling(histogram.length - 1);
}

/** Latency buckets since the start, by kind of request, for Prometheus histograms: `counts[i]` requests fell in bucket i. */
export interface LatencyHistogram {
  readonly counts: readonly number[];
  /** Seconds, summed over every request counted. */
  readonly sumSeconds: number;
}

/** The upper bound, in microseconds, of latency bucket `i` of a LatencyHistogram. */
export function latencyBucketCeiling(i: number): number {
  return bucketCeiling(i);
}

/** The kinds of request a histogram keeps apart. */
export type LatencyGroup = "read" | "write" | "other";
const GROUPS: readonly LatencyGroup[] = ["read", "write", "other"];

export interface CommandTotals {
  readonly ops: number;
  readonly bytes: number;
  readonly errors: number;
}

/** One second of history, for sparklines. */
export interface SecondSample {
  readonly readOps: number;
  readonly writeOps: number;
  readonly readBytes: number;
  readonly writeBytes: number;
}

export interface MetricsSnapshot {
  /** Milliseconds since the epoch when the snapshot was taken. */
  readonly time: number;
  /** Totals since the device started, by command name (read, write, flush, trim, cache, write_zeroes, ...). */
  readonly totals: Readonly<Record<string, CommandTotals>>;
  readonly inFlight: number;
  readonly connections: number;
  /** Rates over the last `windowSeconds` complete seconds. */
  readonly windowSeconds: number;
  readonly readIops: number;
  readonly writeIops: number;
  readonly readBytesPerSecond: number;
  readonly writeBytesPerSecond: number;
  /** Latency percentiles (microseconds) over all commands in the window (the whole run while it is shorter). */
  readonly latencyP50Micros: number;
  readonly latencyP99Micros: number;
  /** The last 60 complete seconds, oldest first. */
  readonly history: readonly SecondSample[];
}

interface Second {
  epochSecond: number;
  readOps: number;
  writeOps: number;
  readBytes: number;
  writeBytes: number;
  latency: Float64Array;
}

function emptySecond(epochSecond: number): Second {
  return { epochSecond, readOps: 0, writeOps: 0, readBytes: 0, writeBytes: 0, latency: new Float64Array(BUCKETS) };
}

export class DeviceMetrics {
  private readonly ops = new Float64Array(SLOTS);
  private readonly bytes = new Float64Array(SLOTS);
  private readonly errors = new Float64Array(SLOTS);
  private readonly ring: Second[] = [];
  private current: Second;
  /** Since the start: one row of BUCKETS per latency group, and the latency sum per group (seconds). */
  private readonly cumulative = new Float64Array(GROUPS.length * BUCKETS);
  private readonly latencySums = new Float64Array(GROUPS.length);
  inFlight = 0;
  connections = 0;

  /** `clock` (milliseconds since the epoch) is for tests; by default time comes from performance.now(). */
  constructor(private readonly clock?: () => number) {
    for (let i = 0; i < HISTORY_SECONDS + 1; i++) this.ring.push(emptySecond(-1));
    this.current = this.ring[0]!;
  }

  /**
   * Marks a request as started; returns the start time to pass to `end`. Requests that arrived in one read share
   * one `now`, which saves a clock read per request.
   */
  begin(now: number = performance.now()): number {
    this.inFlight++;
    return now;
  }

  /** Records a finished request of NBD command `command` that moved `byteCount` bytes. */
  end(command: number, byteCount: number, started: number, ok: boolean): void {
    this.inFlight--;
    const slot = command < SLOTS ? command : SLOTS - 1;
    this.ops[slot]!++;
    if (ok) this.bytes[slot]! += byteCount;
    else this.errors[slot]!++;
    const now = performance.now();
    const second = this.secondFor(this.clock ? this.clock() : performance.timeOrigin + now);
    const bucket = bucketOf((now - started) * 1000);
    second.latency[bucket]!++;
    const group = command === CMD.READ ? 0 : command === CMD.WRITE ? 1 : 2;
    this.cumulative[group * BUCKETS + bucket]!++;
    this.latencySums[group]! += (now - started) / 1000;
    if (!ok) return;
    if (command === CMD.READ) {
      second.readOps++;
      second.readBytes += byteCount;
    } else if (command === CMD.WRITE || command === CMD.WRITE_ZEROES || command === CMD.TRIM) {
      second.writeOps++;
      if (command === CMD.WRITE) second.writeBytes += byteCount;
    }
  }

  private secondFor(nowMs: number): Second {
    const epochSecond = Math.floor(nowMs / 1000);
    if (this.current.epochSecond === epochSecond) return this.current;
    const slot = this.ring[epochSecond % this.ring.length]!;
    slot.epochSecond = epochSecond;
    slot.readOps = slot.writeOps = slot.readBytes = slot.writeBytes = 0;
    slot.latency.fill(0);
    this.current = slot;
    return slot;
  }

  /** Every request's latency since the start, by group (what a Prometheus histogram exports). */
  latencyHistograms(): Readonly<Record<LatencyGroup, LatencyHistogram>> {
    const out = {} as Record<LatencyGroup, LatencyHistogram>;
    GROUPS.forEach((group, g) => {
      out[group] = { counts: Array.from(this.cumulative.subarray(g * BUCKETS, (g + 1) * BUCKETS)), sumSeconds: this.latencySums[g]! };
    });
    return out;
  }

  snapshot(windowSeconds = 5): MetricsSnapshot {
    const now = this.clock ? this.clock() : performance.timeOrigin + performance.now();
    const thisSecond = Math.floor(now / 1000);
    const totals: Record<string, CommandTotals> = {};
    for (const command of COMMANDS) {
      totals[CMD_NAMES[command]!] = { ops: this.ops[command]!, bytes: this.bytes[command]!, errors: this.errors[command]! };
    }
    const history: SecondSample[] = [];
    for (let s = thisSecond - HISTORY_SECONDS; s < thisSecond; s++) {
      const slot = this.ring[s % this.ring.length]!;
      history.push(
        slot.epochSecond === s
          ? { readOps: slot.readOps, writeOps: slot.writeOps, readBytes: slot.readBytes, writeBytes: slot.writeBytes }
          : { readOps: 0, writeOps: 0, readBytes: 0, writeBytes: 0 },
      );
    }
    const window = history.slice(-windowSeconds);
    const sum = (pick: (s: SecondSample) => number) => window.reduce((acc, s) => acc + pick(s), 0) / windowSeconds;
    const latency = new Float64Array(BUCKETS);
    for (let s = thisSecond - windowSeconds; s <= thisSecond; s++) {
      const slot = this.ring[s % this.ring.length]!;
      if (slot.epochSecond !== s) continue;
      for (let i = 0; i < BUCKETS; i++) latency[i]! += slot.latency[i]!;
    }
    return {
      time: now,
      totals,
      inFlight: this.inFlight,
      connections: this.connections,
      windowSeconds,
      readIops: sum((s) => s.readOps),
      writeIops: sum((s) => s.writeOps),
      readBytesPerSecond: sum((s) => s.readBytes),
      writeBytesPerSecond: sum((s) => s.writeBytes),
      latencyP50Micros: percentile(latency, 0.5),
      latencyP99Micros: percentile(latency, 0.99),
      history,
    };
  }
}
