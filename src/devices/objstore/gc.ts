/**
 * Garbage collection: a stored log object whose live fraction (bytes the map still points at, over its data area)
 * falls below the threshold is compacted: its live extents are written again at the head of the log, as if a client
 * had rewritten them, and the object is deleted after the next checkpoint (checkpointer.ts), unless a snapshot needs
 * it. Victims go lowest live fraction first, a few objects' worth per cycle, one cycle at a time.
 *
 * The copy is checked against the map in the same synchronous step that appends it: a piece a client overwrote
 * while the victim was being fetched is not copied, so GC never brings old data back.
 *
 * Cost, for uniformly random overwrites: compacting an object at live fraction t uploads t of it again to free
 * 1 - t, so the upload amplification is at most 1 / (1 - t) (2x at t = 0.5), and the store holds at most about
 * 1 / t times the live data. docs/BENCHMARKS.md measures both for several thresholds.
 */
import type { Checkpointer } from "./checkpointer.ts";
import type { LogWriter } from "./log-writer.ts";
import { PAGE_SPAN } from "./map-page.ts";
import { STORED, type LogObject } from "./objects.ts";
import type { ReadCache } from "./read-cache.ts";
import type { Volume } from "./volume.ts";

export const DEFAULT_GC_THRESHOLD = 0.5;

interface LiveRun {
  readonly offset: number;
  readonly length: number;
  readonly pos: number;
}

export class Collector {
  private running: Promise<void> | undefined;
  cycles = 0;
  /** Client-visible errors of the last cycle, for the log (a cycle that fails is simply tried again later). */
  lastError: string | undefined;

  constructor(
    private readonly v: Volume,
    private readonly writer: LogWriter,
    private readonly cache: ReadCache,
    private readonly checkpointer: Checkpointer,
    /** Live fraction below which an object is compacted; 0 turns the GC off. */
    readonly threshold: number,
  ) {}

  get busy(): boolean {
    return this.running !== undefined;
  }

  /** Log objects that could be compacted now, lowest live fraction first. */
  candidates(): LogObject[] {
    if (this.threshold <= 0) return [];
    const pinned = this.v.pins.objects;
    const out: LogObject[] = [];
    for (const o of this.v.objects.values()) {
      if (o.state !== STORED || o.dataLength === 0 || !this.v.owner(o.seq).own || pinned.has(o.seq) || this.checkpointer.compacted.has(o.seq)) continue;
      if (o.live / o.dataLength < this.threshold) out.push(o);
    }
    return out.sort((a, b) => a.live / a.dataLength - b.live / b.dataLength);
  }

  private stopped = false;
  private lookedAt = 0;

  /** Starts no more cycles and waits for the one running. */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.running;
  }

  /** Runs one cycle when there is something to compact and no cycle or checkpoint is running. */
  maybe(): void {
    if (this.stopped || this.running !== undefined || this.checkpointer.busy) return;
    // Looking for victims walks the object table: twice a second at most.
    const now = Date.now();
    if (now - this.lookedAt < 500) return;
    this.lookedAt = now;
    const victims = this.pick();
    if (victims.length === 0) return;
    this.running = this.cycle(victims)
      .catch((e: unknown) => {
        this.lastError = e instanceof Error ? e.message : String(e);
        this.v.log.log("warn", "objstore: a garbage collection cycle failed; it is tried again later", { error: this.lastError });
      })
      .finally(() => {
        this.running = undefined;
        this.checkpointer.maybe();
      });
  }

  /** Victims for one cycle: up to four objects' worth of live bytes (at least one object). */
  private pick(): LogObject[] {
    const budget = 4 * this.v.objectSize;
    const out: LogObject[] = [];
    let live = 0;
    for (const o of this.candidates()) {
      if (out.length > 0 && live + o.live > budget) break;
      out.push(o);
      live += o.live;
    }
    return out;
  }

  /** Compacts `victims` now and waits for the copy (for reclaim and tests). */
  async runOnce(): Promise<number> {
    while (this.running !== undefined) await this.running;
    let compacted = 0;
    for (;;) {
      const victims = this.pick();
      if (victims.length === 0) return compacted;
      await this.cycle(victims);
      compacted += victims.length;
    }
  }

  private async cycle(victims: LogObject[]): Promise<void> {
    const bySeq = new Map(victims.map((o) => [o.seq, o] as const));
    const runs = this.liveRuns(bySeq);
    for (const o of victims) o.pins++;
    try {
      // One ranged GET per victim, over the part of its data area that holds live bytes.
      const fetched = new Map<number, { pos: number; bytes: Uint8Array }>();
      await Promise.all(
        victims.map(async (o) => {
          const list = runs.get(o.seq) ?? [];
          if (list.length === 0) return;
          let from = Infinity;
          let to = 0;
          for (const r of list) {
            from = Math.min(from, r.pos);
            to = Math.max(to, r.pos + r.length);
          }
          fetched.set(o.seq, { pos: from, bytes: await this.cache.fetch(o, from, to - from) });
        }),
      );
      // From here to the end, synchronous: the map cannot change under the check.
      for (const o of victims) {
        const got = fetched.get(o.seq);
        for (const r of runs.get(o.seq) ?? []) {
          for (const piece of this.v.map.lookup(r.offset, r.length)) {
            if (piece.kind !== "data" || piece.seq !== o.seq || piece.pos !== r.pos + (piece.offset - r.offset) || got === undefined) continue;
            const at = piece.pos - got.pos;
            this.writer.write(piece.offset, got.bytes.subarray(at, at + piece.length), true);
          }
        }
        this.checkpointer.compacted.add(o.seq);
      }
      this.cycles++;
    } finally {
      for (const o of victims) o.pins--;
    }
  }

  /** The extents of the map that point into the victims, per victim. */
  private liveRuns(victims: ReadonlyMap<number, LogObject>): Map<number, LiveRun[]> {
    const out = new Map<number, LiveRun[]>();
    for (const index of this.v.map.pageIndexes()) {
      const page = this.v.map.peek(index);
      page?.forEach((start, end, seq, pos, zero) => {
        if (zero || !victims.has(seq)) return;
        let list = out.get(seq);
        if (list === undefined) out.set(seq, (list = []));
        list.push({ offset: index * PAGE_SPAN + start, length: end - start, pos });
      });
    }
    return out;
  }
}
