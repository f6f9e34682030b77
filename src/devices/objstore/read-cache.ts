/**
 * Bytes of stored log objects in the local cache: a stored object's slot holds whichever of its chunks were fetched
 * (or all of them, for an object this daemon wrote and uploaded). A read of a missing range fetches only the chunks
 * it needs, each run of adjacent missing chunks with one ranged GET. Chunks are evicted least recently used first
 * while the cache is over --objstore-diskcache; the open object and those waiting for upload count towards the
 * bound but are never evicted.
 *
 * Eviction marks chunks absent first and punches their bytes out only after a commit recorded that, so a catalog
 * never names a chunk whose bytes are gone.
 */
import { DeviceError } from "../device.ts";
import { chunkSpan, type ObjectLayout } from "./codec/log-object.ts";
import { WorkerLostError } from "./codec/offloaded-codec.ts";
import type { Committer } from "./committer.ts";
import { STORED, type LogObject } from "./objects.ts";
import type { Volume } from "./volume.ts";

const KEY_SHIFT = 2 ** 21;

export class ReadCache {
  /** Cached chunks of stored objects, least recently used first: key seq * 2^21 + chunk. */
  private readonly lru = new Map<number, LogObject>();
  private readonly fetching = new Map<number, Promise<void>>();
  /** Bytes of stored objects' chunks in slots. */
  private cachedBytes = 0;
  private evicting = false;

  constructor(
    private readonly v: Volume,
    /** Bytes of local cache allowed; 0 for no bound. */
    readonly bound: number,
    private readonly committer: Committer,
  ) {}

  private chunkLength(o: LogObject, i: number): number {
    return Math.min(this.v.chunkSize, o.dataLength - i * this.v.chunkSize);
  }

  /** Bytes of objects not yet stored (the log writer's count; set once the writer exists). */
  pendingBytes: () => number = () => 0;

  /** Bytes the cache holds: chunks of stored objects, plus every byte of objects not yet stored. */
  get bytes(): number {
    return this.cachedBytes + this.pendingBytes();
  }

  /** Takes in a stored object whose slot holds some chunks already (at open, or after its upload: all of them). */
  adopt(o: LogObject): void {
    if (o.slot === undefined) return;
    for (let i = 0; i < o.chunkCount; i++) {
      if (!o.hasChunk(i)) continue;
      const key = o.seq * KEY_SHIFT + i;
      if (!this.lru.has(key)) this.cachedBytes += this.chunkLength(o, i);
      this.lru.set(key, o);
    }
  }

  /** Whether [pos, pos+length) of `o` can be read from its slot now. */
  has(o: LogObject, pos: number, length: number): boolean {
    if (o.state !== STORED) return o.slot !== undefined;
    if (o.slot === undefined) return false;
    const last = Math.floor((pos + length - 1) / this.v.chunkSize);
    for (let i = Math.floor(pos / this.v.chunkSize); i <= last; i++) if (!o.hasChunk(i)) return false;
    return true;
  }

  /** Reads from the slot (the caller checked `has`); marks the chunks recently used. */
  read(o: LogObject, pos: number, out: Uint8Array, at: number, length: number): void {
    this.v.file.read(o.slot!, pos, out, at, length);
    // Recency only matters when something is ever evicted.
    if (o.state !== STORED || this.bound === 0) return;
    const last = Math.floor((pos + length - 1) / this.v.chunkSize);
    for (let i = Math.floor(pos / this.v.chunkSize); i <= last; i++) {
      const key = o.seq * KEY_SHIFT + i;
      this.lru.delete(key);
      this.lru.set(key, o);
    }
  }

  /** Fetches the chunks of stored object `o` that [pos, pos+length) needs and the slot lacks. */
  async ensure(o: LogObject, pos: number, length: number): Promise<void> {
    const first = Math.floor(pos / this.v.chunkSize);
    const last = Math.floor((pos + length - 1) / this.v.chunkSize);
    const waits: Promise<void>[] = [];
    let runStart = -1;
    const flush = (end: number) => {
      if (runStart < 0) return;
      waits.push(this.fetchRun(o, runStart, end));
      runStart = -1;
    };
    for (let i = first; i <= last; i++) {
      const inFlight = this.fetching.get(o.seq * KEY_SHIFT + i);
      if (o.hasChunk(i) || inFlight !== undefined) {
        flush(i - 1);
        if (inFlight !== undefined) waits.push(inFlight);
        continue;
      }
      if (runStart < 0) runStart = i;
    }
    flush(last);
    await Promise.all(waits);
  }

  /** One ranged GET for chunks first..last of `o`, into its slot. */
  private fetchRun(o: LogObject, first: number, last: number): Promise<void> {
    const job = (async () => {
      const plain = await this.fetchChunks(o, first, last);
      if (o.state !== STORED || this.v.objects.get(o.seq) !== o) return;
      o.slot ??= this.v.file.takeSlot();
      this.v.file.write(o.slot, first * this.v.chunkSize, plain);
      for (let i = first; i <= last; i++) {
        o.markChunk(i, true);
        const key = o.seq * KEY_SHIFT + i;
        if (!this.lru.has(key)) this.cachedBytes += this.chunkLength(o, i);
        this.lru.set(key, o);
      }
      this.evictAsNeeded();
    })();
    for (let i = first; i <= last; i++) this.fetching.set(o.seq * KEY_SHIFT + i, job);
    return job.finally(() => {
      for (let i = first; i <= last; i++) if (this.fetching.get(o.seq * KEY_SHIFT + i) === job) this.fetching.delete(o.seq * KEY_SHIFT + i);
    });
  }

  /** The plaintext of chunks first..last of stored object `o`, fetched with one ranged GET (not cached). */
  async fetchChunks(o: LogObject, first: number, last: number): Promise<Uint8Array> {
    const { store, stats, codec } = this.v;
    const layout = o.layout as ObjectLayout;
    const owner = this.v.owner(o.seq);
    const key = this.v.keyOf(o.seq, o.epoch);
    const span = chunkSpan(layout, first, last);
    for (let attempt = 0; ; attempt++) {
      let body: Uint8Array;
      try {
        const got = await store.get(key, span);
        if (got === undefined) throw new Error("the object is missing from the store");
        body = got.body;
      } catch (e) {
        const message = `cannot fetch ${key} from ${store.description}: ${e instanceof Error ? e.message : String(e)}`;
        stats.failed(message);
        throw new DeviceError("EIO", `objstore device: ${message}`);
      }
      stats.downloads++;
      stats.downloadedBytes += body.length;
      try {
        // Handed over: the body moves to the worker uncopied; if the worker dies with it, it is fetched again.
        return await codec.decodeChunks(owner.volumeId, layout, first, body, true);
      } catch (e) {
        if (e instanceof WorkerLostError && attempt === 0) continue;
        const message = `${key} in ${store.description} is unreadable: ${e instanceof Error ? e.message : String(e)}`;
        stats.failed(message);
        throw new DeviceError("EIO", `objstore device: ${message}`);
      }
    }
  }

  /** Bytes [pos, pos+length) of `o`: from its slot when there, else fetched without caching them (for the GC). */
  async fetch(o: LogObject, pos: number, length: number): Promise<Uint8Array> {
    const out = new Uint8Array(length);
    if (this.has(o, pos, length)) {
      this.v.file.read(o.slot!, pos, out, 0, length);
      return out;
    }
    const first = Math.floor(pos / this.v.chunkSize);
    const last = Math.floor((pos + length - 1) / this.v.chunkSize);
    const plain = await this.fetchChunks(o, first, last);
    out.set(plain.subarray(pos - first * this.v.chunkSize, pos - first * this.v.chunkSize + length));
    return out;
  }

  /** Evicts least recently used chunks while the cache is over its bound. */
  evictAsNeeded(): void {
    if (this.bound === 0 || this.evicting || this.bytes <= this.bound) return;
    const target = this.bound * 0.9;
    let over = this.bytes - target;
    const released: LogObject[] = [];
    for (const [key, o] of this.lru) {
      if (over <= 0) break;
      // An uploaded object's chunks go only once the catalog durably says it is stored.
      if (o.pins > 0 || o.durableState !== STORED) continue;
      const i = key - o.seq * KEY_SHIFT;
      this.lru.delete(key);
      const n = this.chunkLength(o, i);
      this.cachedBytes -= n;
      over -= n;
      o.markChunk(i, false);
      released.push(o);
    }
    if (released.length === 0) return;
    this.evicting = true;
    // Recorded first, punched after: a crash in between leaves bytes nobody names, never a name without bytes.
    const pending = [...new Set(released)].map((o) => ({ o, slot: o.slot, chunks: this.absentChunks(o) }));
    for (const { o } of pending) if (o.presentCount() === 0) o.slot = undefined;
    this.committer
      .commit(0)
      .then(() => {
        for (const { o, slot, chunks } of pending) {
          if (slot === undefined) continue;
          // A fetch meanwhile may have given the object a new slot, or refilled chunks of this one.
          if (o.slot !== slot) this.v.file.releaseSlot(slot);
          else for (const i of chunks) if (!o.hasChunk(i)) this.v.file.zero(slot, i * this.v.chunkSize, this.chunkLength(o, i));
        }
      })
      .catch((e: unknown) => this.v.log.log("warn", "objstore: could not record evicted cache chunks; their space is freed at the next start", { error: String(e) }))
      .finally(() => {
        this.evicting = false;
      });
  }

  private absentChunks(o: LogObject): number[] {
    const out: number[] = [];
    for (let i = 0; i < o.chunkCount; i++) if (!o.hasChunk(i)) out.push(i);
    return out;
  }

  /** Drops every cached chunk of `o` (deleted from the store, or the cache is being emptied); returns its old slot. */
  forget(o: LogObject): number | undefined {
    for (let i = 0; i < o.chunkCount; i++) {
      const key = o.seq * KEY_SHIFT + i;
      if (this.lru.delete(key)) this.cachedBytes -= this.chunkLength(o, i);
    }
    const slot = o.slot;
    o.slot = undefined;
    o.present = undefined;
    o.rowDirty = true;
    return slot;
  }

  /** Chunks and bytes cached, for the stats. */
  get chunkCount(): number {
    return this.lru.size;
  }
}
