/**
 * Snapshots and clones. A snapshot is a named checkpoint: `<volume>/snapshots/<name>` says which checkpoint, and
 * the GC keeps that checkpoint and every log object it refers to until the snapshot is deleted. A clone is a new
 * volume whose manifest names the snapshot it starts from: it reads the base's objects under the base's name and
 * writes only its own, so making one copies no data. `<base>/clones/<clone>` records it, and a snapshot a clone
 * starts from cannot be deleted.
 */
import { Checkpointer } from "./checkpointer.ts";
import { volumeIdBytes } from "./codec/manifest.ts";
import { cloneKey, clonePrefix, isValidName, snapshotKey, snapshotPrefix } from "./layout.ts";
import { packRefs } from "./refs.ts";
import type { ObjectStore } from "./store/types.ts";
import type { Volume } from "./volume.ts";

export interface SnapshotRecord {
  readonly name: string;
  readonly volume: string;
  readonly volumeId: string;
  /** The checkpoint it is. */
  readonly seq: number;
  readonly epoch: number;
  readonly createdAt: string;
}

export interface CloneRecord {
  readonly clone: string;
  readonly snapshot: string;
  readonly createdAt: string;
}

/** A snapshot operation that cannot be done (a name in use, a snapshot a clone needs, an unknown name). */
export class SnapshotError extends Error {
  override readonly name = "SnapshotError";
}

export function checkSnapshotName(name: string): void {
  if (!isValidName(name) || name.includes("@")) {
    throw new SnapshotError(`snapshot name "${name}" is not allowed: use 1 to 128 letters, digits, ".", "_" or "-", starting with a letter or digit`);
  }
}

const encode = (value: unknown) => new TextEncoder().encode(`${JSON.stringify(value, null, 2)}\n`);

async function readRecord<T>(store: ObjectStore, key: string): Promise<T | undefined> {
  const got = await store.get(key);
  if (got === undefined) return undefined;
  return JSON.parse(new TextDecoder().decode(got.body)) as T;
}

export async function readSnapshot(store: ObjectStore, volume: string, name: string): Promise<SnapshotRecord | undefined> {
  const r = await readRecord<Partial<SnapshotRecord>>(store, snapshotKey(volume, name));
  if (r === undefined) return undefined;
  if (typeof r.seq !== "number" || typeof r.epoch !== "number" || typeof r.volumeId !== "string") throw new Error(`snapshot record ${snapshotKey(volume, name)} is malformed`);
  return { name, volume, volumeId: r.volumeId, seq: r.seq, epoch: r.epoch, createdAt: String(r.createdAt ?? "?") };
}

export async function listSnapshots(store: ObjectStore, volume: string): Promise<SnapshotRecord[]> {
  const prefix = snapshotPrefix(volume);
  const out: SnapshotRecord[] = [];
  for await (const info of store.list(prefix)) {
    const name = info.key.slice(prefix.length);
    if (!isValidName(name)) continue;
    const r = await readSnapshot(store, volume, name);
    if (r !== undefined) out.push(r);
  }
  return out;
}

export async function listClones(store: ObjectStore, volume: string): Promise<CloneRecord[]> {
  const prefix = clonePrefix(volume);
  const out: CloneRecord[] = [];
  for await (const info of store.list(prefix)) {
    const r = await readRecord<Partial<CloneRecord>>(store, info.key);
    if (r !== undefined && typeof r.snapshot === "string") out.push({ clone: info.key.slice(prefix.length), snapshot: r.snapshot, createdAt: String(r.createdAt ?? "?") });
  }
  return out;
}

/**
 * Brings the catalog's snapshot rows in line with the store (another daemon or the CLI may have made or deleted
 * some), reading the checkpoint of each new one for the objects it keeps.
 */
export async function syncSnapshots(v: Volume): Promise<void> {
  const inStore = await listSnapshots(v.store, v.name);
  const names = new Set(inStore.map((s) => s.name));
  const known = new Map(v.catalog.snapshots().map((s) => [s.name, s] as const));
  for (const s of inStore) {
    const row = known.get(s.name);
    if (row !== undefined && row.seq === s.seq && row.epoch === s.epoch) continue;
    const content = await Checkpointer.load(v, { name: v.name, volumeId: v.volumeId }, s.seq, s.epoch);
    v.catalog.saveSnapshot({ name: s.name, seq: s.seq, epoch: s.epoch, refs: packRefs(content.objects.map((o) => o.seq)) });
  }
  for (const name of known.keys()) if (!names.has(name) && !name.startsWith("@")) v.catalog.deleteSnapshot(name);
  v.refreshPins();
}

/** Records snapshot `name` of checkpoint `at` (which must refer to `refs`); refuses a name in use. */
export async function recordSnapshot(v: Volume, name: string, at: { seq: number; epoch: number; refs: ReadonlySet<number> }): Promise<SnapshotRecord> {
  checkSnapshotName(name);
  const key = snapshotKey(v.name, name);
  const record: SnapshotRecord = { name, volume: v.name, volumeId: v.manifest.volumeId, seq: at.seq, epoch: at.epoch, createdAt: new Date().toISOString() };
  const body = encode({ seq: record.seq, epoch: record.epoch, volumeId: record.volumeId, createdAt: record.createdAt });
  const result = await v.store.createIfAbsent(key, body);
  if (result.outcome === "exists") throw new SnapshotError(`volume ${v.name} already has a snapshot named ${name}`);
  // A store without conditional create: the check before this call is all there is.
  if (result.outcome === "unsupported") await v.store.put(key, body);
  v.catalog.durably(() => v.catalog.saveSnapshot({ name, seq: at.seq, epoch: at.epoch, refs: packRefs(at.refs) }));
  v.refreshPins();
  return record;
}

/** Deletes snapshot `name`, unless a clone starts from it. Its objects go at the next checkpoint's collection. */
export async function deleteSnapshot(store: ObjectStore, volume: string, name: string): Promise<void> {
  checkSnapshotName(name);
  if ((await store.head(snapshotKey(volume, name))) === undefined) throw new SnapshotError(`volume ${volume} has no snapshot named ${name}`);
  const users = (await listClones(store, volume)).filter((c) => c.snapshot === name);
  if (users.length > 0) {
    throw new SnapshotError(`snapshot ${volume}@${name} cannot be deleted: the clone${users.length > 1 ? "s" : ""} ${users.map((c) => c.clone).join(", ")} start${users.length > 1 ? "" : "s"} from it`);
  }
  await store.delete(snapshotKey(volume, name));
}

/** Records that `clone` starts from `base@snapshot`. */
export async function recordClone(store: ObjectStore, base: string, clone: string, snapshot: string): Promise<void> {
  await store.put(cloneKey(base, clone), encode({ snapshot, createdAt: new Date().toISOString() }));
}

export { volumeIdBytes };
