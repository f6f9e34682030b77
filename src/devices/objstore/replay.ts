/**
 * A cold open: the volume rebuilt from the store alone. Take the newest checkpoint (highest writer epoch first, then
 * highest sequence number), then replay the log objects after it in sequence order, reading only their headers,
 * and stop at the first sequence number with no object: the store then always opens to the state after some
 * prefix of the writes.
 *
 * Fencing: at each sequence number the object of the highest epoch wins, and an object of an epoch older than one
 * already seen in the chain (or than the checkpoint's) counts as missing. A takeover writes its epoch's checkpoint
 * before anything else, so whatever the old writer uploads afterwards is never applied.
 */
import type { ObjstoreCatalog } from "./catalog.ts";
import { Checkpointer } from "./checkpointer.ts";
import { FLAG_CONTINUED, KIND_LOG, type LogExtent, type ObjectLayout } from "./codec/log-object.ts";
import { volumeIdBytes, type Manifest } from "./codec/manifest.ts";
import { checkpointPrefix, logPrefix, parseSequenced } from "./layout.ts";
import { LogObject, STORED, type ObjectTable } from "./objects.ts";
import type { ObjectStore } from "./store/types.ts";
import type { Volume } from "./volume.ts";

/** How many headers a replay fetches ahead of the one it applies. */
const HEADER_WINDOW = 8;
/** First bytes fetched of a log object: the preamble and, nearly always, its whole header. */
const HEADER_GUESS = 64 * 1024;

export interface CheckpointId {
  readonly seq: number;
  readonly epoch: number;
}

/** The log objects in the store: for each sequence number, the epochs it was written under. */
export async function listLog(store: ObjectStore, name: string): Promise<Map<number, number[]>> {
  const prefix = logPrefix(name);
  const bySeq = new Map<number, number[]>();
  for await (const info of store.list(prefix)) {
    const id = parseSequenced(info.key.slice(prefix.length));
    if (id === undefined) continue;
    const list = bySeq.get(id.seq);
    if (list === undefined) bySeq.set(id.seq, [id.epoch]);
    else list.push(id.epoch);
  }
  return bySeq;
}

/** This volume's checkpoints, best first: highest writer epoch, then highest sequence number. */
async function listCheckpoints(store: ObjectStore, name: string): Promise<CheckpointId[]> {
  const prefix = checkpointPrefix(name);
  const out: CheckpointId[] = [];
  for await (const info of store.list(prefix)) {
    const id = parseSequenced(info.key.slice(prefix.length));
    if (id !== undefined) out.push(id);
  }
  return out.sort((a, b) => b.epoch - a.epoch || b.seq - a.seq);
}

/** The chain of log objects after `from` (sequence number and epoch of each), as the rule above picks it. */
export function logChain(listing: ReadonlyMap<number, readonly number[]>, from: CheckpointId): CheckpointId[] {
  const chain: CheckpointId[] = [];
  let epoch = from.epoch;
  for (let seq = from.seq + 1; ; seq++) {
    const epochs = listing.get(seq);
    const e = epochs === undefined ? undefined : Math.max(...epochs);
    if (e === undefined || e < epoch) break;
    epoch = e;
    chain.push({ seq, epoch: e });
  }
  return chain;
}

export interface ColdOpen {
  readonly v: Volume;
  /** The last sequence number the volume has. */
  readonly head: number;
  /** The checkpoint it started from, when it is this volume's own. */
  readonly checkpoint: { readonly seq: number; readonly epoch: number; readonly refs: Set<number>; readonly bytes: number } | undefined;
}

/**
 * Rebuilds the volume from the store into the (empty) catalog and table: the newest checkpoint whose log objects are
 * all there (a bucket copied object by object can hold a checkpoint newer than some objects it names: then the one
 * before it), or for a clone without one its origin's; then the chain after it. `build` makes the Volume once the
 * catalog holds the checkpoint's pages.
 */
export async function coldOpen(
  parts: Pick<Volume, "store" | "codec" | "log">,
  name: string,
  manifest: Manifest,
  catalog: ObjstoreCatalog,
  objects: ObjectTable,
  build: () => Volume,
): Promise<ColdOpen> {
  const { store, log } = parts;
  const listing = await listLog(store, name);
  const own = volumeIdBytes(manifest);
  const baseSeq = manifest.bases.length === 0 ? 0 : manifest.bases[manifest.bases.length - 1]!.upTo;
  let chosen: { id: CheckpointId; content: Awaited<ReturnType<typeof Checkpointer.load>>; own: boolean } | undefined;
  for (const id of await listCheckpoints(store, name)) {
    const content = await Checkpointer.load(parts, { name, volumeId: own }, id.seq, id.epoch);
    const missing = content.objects.filter((o) => o.seq > baseSeq && !(listing.get(o.seq) ?? []).includes(o.epoch));
    if (missing.length === 0) {
      chosen = { id, content, own: true };
      break;
    }
    log.log("warn", "objstore: a checkpoint names log objects the store lacks (a copy of an incomplete bucket?); trying the one before it", {
      checkpoint: `${id.seq}.${id.epoch}`,
      missing: missing.length,
    });
  }
  if (chosen === undefined && manifest.origin !== null) {
    const origin = manifest.origin;
    const base = manifest.bases[manifest.bases.length - 1]!;
    const content = await Checkpointer.load(parts, { name: origin.volume, volumeId: volumeIdBytes(base.volumeId) }, origin.seq, origin.epoch);
    chosen = { id: { seq: origin.seq, epoch: origin.epoch }, content, own: false };
  }
  const refs = new Set<number>();
  if (chosen !== undefined) {
    catalog.transaction(() => {
      for (const [index, page] of chosen!.content.pages) catalog.savePage(index, page.pack());
    });
    for (const c of chosen.content.objects) {
      const o = new LogObject(c.seq, c.epoch, STORED);
      o.dataLength = c.dataLength;
      o.live = c.live;
      o.layout = c.layout;
      objects.add(o);
      refs.add(c.seq);
    }
  }
  const v = build();
  // A clone's own objects start after its base's, under its own epochs.
  const from = chosen === undefined ? { seq: baseSeq, epoch: 0 } : { seq: chosen.id.seq, epoch: chosen.own ? chosen.id.epoch : 0 };
  const head = await replayChain(v, logChain(listing, from), from.seq);
  const checkpoint = chosen?.own === true ? { seq: chosen.id.seq, epoch: chosen.id.epoch, refs, bytes: chosen.content.bytes } : undefined;
  return { v, head, checkpoint };
}

/** Writes a checkpoint's map pages into the (empty) catalog and its objects into the table (a snapshot open). */
export async function loadCheckpoint(
  v: Pick<Volume, "store" | "codec">,
  catalog: ObjstoreCatalog,
  objects: ObjectTable,
  at: CheckpointId & { readonly owner: string; readonly volumeId: Uint8Array },
): Promise<void> {
  const content = await Checkpointer.load(v, { name: at.owner, volumeId: at.volumeId }, at.seq, at.epoch);
  catalog.transaction(() => {
    for (const [index, page] of content.pages) catalog.savePage(index, page.pack());
  });
  for (const c of content.objects) {
    const o = new LogObject(c.seq, c.epoch, STORED);
    o.dataLength = c.dataLength;
    o.live = c.live;
    o.layout = c.layout;
    objects.add(o);
  }
}

/** Reads one log object's header: its layout and extents. */
export async function readLogHeader(v: Volume, id: CheckpointId): Promise<{ layout: ObjectLayout; extents: LogExtent[]; flags: number }> {
  const key = v.keyOf(id.seq, id.epoch);
  const owner = v.owner(id.seq);
  const head = await v.store.get(key, { offset: 0, length: HEADER_GUESS });
  if (head === undefined) throw new Error(`log object ${key} vanished from ${v.store.description} during the replay`);
  v.stats.downloads++;
  v.stats.downloadedBytes += head.body.length;
  return await v.codec.decodeHeader(head.body, { volumeId: owner.volumeId, kind: KIND_LOG, seq: id.seq, epoch: id.epoch }, async (offset, length) => {
    const more = await v.store.get(key, { offset, length });
    if (more === undefined) throw new Error(`log object ${key} vanished from ${v.store.description} during the replay`);
    v.stats.downloads++;
    v.stats.downloadedBytes += more.body.length;
    return more.body;
  });
}

/**
 * Applies the chain to the map, in order, fetching headers a few ahead. Objects whose last write continues in the
 * next one are held back until that one arrives, so a chain that ends inside a write larger than an object leaves
 * that write out. Returns the last sequence number applied.
 */
export async function replayChain(v: Volume, chain: readonly CheckpointId[], from: number): Promise<number> {
  const pending: Array<Promise<{ layout: ObjectLayout; extents: LogExtent[]; flags: number }>> = [];
  const held: Array<{ id: CheckpointId; layout: ObjectLayout; extents: LogExtent[] }> = [];
  let head = from;
  for (let i = 0; i < chain.length; i++) {
    while (pending.length < HEADER_WINDOW && i + pending.length < chain.length) {
      const p = readLogHeader(v, chain[i + pending.length]!);
      p.catch(() => {});
      pending.push(p);
    }
    const id = chain[i]!;
    let got;
    try {
      got = await pending.shift()!;
    } catch (e) {
      throw new Error(`objstore: cannot replay log object ${v.keyOf(id.seq, id.epoch)} of ${v.store.description}: ${e instanceof Error ? e.message : String(e)}`);
    }
    held.push({ id, layout: got.layout, extents: got.extents });
    if ((got.flags & FLAG_CONTINUED) !== 0) continue;
    for (const h of held.splice(0)) {
      const o = new LogObject(h.id.seq, h.id.epoch, STORED);
      o.dataLength = h.layout.dataLength;
      o.layout = h.layout;
      v.objects.add(o);
      for (const e of h.extents) v.map.set(e.offset, e.length, h.id.seq, e.pos, e.zero);
      head = h.id.seq;
    }
  }
  return head;
}
