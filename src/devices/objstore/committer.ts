/**
 * Local commits: the catalog only ever names cache bytes that are on disk. A commit takes a copy of everything that
 * changed (map pages, object rows, settings) at one instant, synchronously, so it is the state after exactly the
 * requests finished by then; then fdatasyncs the cache file (which holds every byte those rows and pages name, since
 * they were written before the copy); then writes the copy in one sqlite transaction (synchronous=FULL). Commits run
 * one after another in the order their copies were taken, so a later commit never lands before an earlier one.
 * Requests that arrive while a commit waits to be taken share it.
 */
import type { ObjectRow } from "./catalog.ts";
import type { LogObject, ObjectState } from "./objects.ts";
import type { Volume } from "./volume.ts";

export class Committer {
  private chain: Promise<void> = Promise.resolve();
  /** The next commit, while its copy is not taken yet. */
  private next: { readonly done: Promise<void>; take: () => void; timer: ReturnType<typeof setTimeout> | undefined } | undefined;
  /** Object rows to delete at the next commit. */
  private readonly deleted = new Set<number>();
  private failure: unknown;
  /** Called after every commit with the objects whose state it made durable. */
  onDurable: (objects: ReadonlyArray<readonly [LogObject, ObjectState, number | undefined]>) => void = () => {};

  constructor(
    private readonly v: Volume,
    /** The settings to record with every commit (the open object, the epoch, ...). */
    private readonly meta: () => Record<string, string | number>,
  ) {}

  /** Forgets an object's row at the next commit. */
  forget(seq: number): void {
    this.deleted.add(seq);
  }

  /**
   * A commit whose copy is taken no earlier than now (after `delayMs`, sharing it with requests meanwhile); resolves
   * once it is durable. A delay of 0 takes the copy in this turn's microtasks.
   */
  commit(delayMs = 0): Promise<void> {
    const next = this.next;
    if (next !== undefined) {
      if (delayMs === 0) next.take();
      return next.done;
    }
    let take!: () => void;
    const done = new Promise<void>((resolve, reject) => {
      take = () => {
        if (this.next?.done !== done) return;
        if (this.next.timer !== undefined) clearTimeout(this.next.timer);
        this.next = undefined;
        this.run().then(resolve, reject);
      };
    });
    done.catch(() => {});
    this.next = { done, take, timer: undefined };
    if (delayMs === 0) queueMicrotask(take);
    else this.next.timer = setTimeout(take, delayMs);
    return done;
  }

  /** Takes the copy now and chains its sync and write after the commits before it. */
  private run(): Promise<void> {
    const { map, objects, catalog, file } = this.v;
    const pages = map.takeDirty();
    const rows: ObjectRow[] = [];
    const states: Array<[LogObject, ObjectState, number | undefined]> = [];
    for (const o of objects.values()) {
      if (!o.rowDirty) continue;
      o.rowDirty = false;
      rows.push(o.row());
      states.push([o, o.state, o.slot]);
    }
    const deleted = [...this.deleted];
    this.deleted.clear();
    const meta = this.meta();
    const step = this.chain.then(async () => {
      try {
        await file.sync();
        catalog.durably(() => {
          for (const p of pages) catalog.savePage(p.page, p.bytes);
          for (const r of rows) catalog.saveObject(r);
          for (const seq of deleted) catalog.deleteObject(seq);
          for (const [k, value] of Object.entries(meta)) catalog.setMeta(k, value);
        });
      } catch (e) {
        // Nothing of this copy is durable: the next commit must carry it again.
        map.settle(pages.map((p) => p.page), false);
        for (const [o] of states) o.rowDirty = true;
        for (const seq of deleted) this.deleted.add(seq);
        this.failure = e;
        throw e;
      }
      map.settle(pages.map((p) => p.page), true);
      this.failure = undefined;
      this.onDurable(states);
    });
    this.chain = step.catch(() => {});
    return step;
  }

  /** The error of the last commit when it failed (a full or failing disk), else undefined. */
  get lastFailure(): unknown {
    return this.failure;
  }

  /** Waits for every commit requested so far. */
  async drain(): Promise<void> {
    if (this.next !== undefined) {
      const pending = this.next.done;
      this.next.take();
      await pending.catch(() => {});
    }
    await this.chain;
  }
}
