/**
 * Opening a volume for writing: the manifest (created for a new volume or clone), the key, the writer lease, then
 * the local state: the cache's own catalog when it is current (a restart, or the same daemon's clean close), or a
 * cold open from the store (replay.ts). A fresh writer epoch writes its checkpoint before anything else: from then
 * on nothing an older writer uploads is applied.
 */
import type { Logger } from "../../shared/log.ts";
import { CacheFile } from "./cache-file.ts";
import type { ObjstoreCatalog } from "./catalog.ts";
import { Checkpointer, type CheckpointRef } from "./checkpointer.ts";
import { volumeCodec } from "./codec/offloaded-codec.ts";
import { decodeManifest, encodeManifest, type Manifest } from "./codec/manifest.ts";
import { Committer } from "./committer.ts";
import { ExtentMap } from "./extent-map.ts";
import { Collector, DEFAULT_GC_THRESHOLD } from "./gc.ts";
import { acquireLease, HeldLease, LeaseHeldError, type Lease } from "./lease.ts";
import { LogWriter } from "./log-writer.ts";
import { checkAgainstManifest, createClone, createVolume, readManifest, volumeKeys } from "./manifest-io.ts";
import { LogObject, ObjectTable, OPEN, SEALED, STORED } from "./objects.ts";
import { DEFAULT_CONCURRENCY, DEFAULT_FLUSH_EVERY, type ObjstoreDeviceOptions } from "./options.ts";
import { ReadCache } from "./read-cache.ts";
import { HEAD_ROW, PREVIOUS_ROW, unpackRefs } from "./refs.ts";
import { coldOpen } from "./replay.ts";
import { ObjstoreRuntime } from "./runtime.ts";
import { syncSnapshots } from "./snapshots.ts";
import type { ObjectStore } from "./store/types.ts";
import { TransferStats } from "./transfer-stats.ts";
import { Uploader } from "./uploader.ts";
import { Volume } from "./volume.ts";

export interface LocalFiles {
  readonly fd: number;
  readonly cachePath: string;
  readonly catalog: ObjstoreCatalog;
}

/** Opens the volume for writing; the caller owns `files` and `store` until this returns. */
export async function openWritable(options: ObjstoreDeviceOptions, store: ObjectStore, files: LocalFiles, log: Logger): Promise<ObjstoreRuntime> {
  const { catalog } = files;
  const remote = await readManifest(store, options.storeName, catalog, log);
  let manifest: Manifest;
  let creating = false;
  if (remote.bytes !== undefined) {
    manifest = decodeManifest(remote.bytes, remote.where);
    checkAgainstManifest(options, manifest);
  } else {
    creating = true;
    manifest = options.cloneOf !== undefined ? await createClone(options, store, log) : await createVolume(options, store, log);
  }
  const keys = volumeKeys(options, manifest, creating);
  const what = `volume ${options.storeName} in ${store.description} (${manifest.size.toLocaleString("en-US")} bytes, ${manifest.encryption})`;
  options.notify?.({ kind: "opened", message: creating ? `created new ${what}` : `reopened ${what}${remote.offline ? " from the local cache: the store is unreachable" : ""}` });
  const codec = volumeCodec(manifest, keys, log, options.storeName);

  const localVolume = catalog.meta("volume_id");
  const localEpoch = Number(catalog.meta("epoch") ?? 0);
  const localNonce = String(catalog.meta("lease_nonce") ?? "");
  const ours = localVolume === manifest.volumeId;
  let lease: Lease;
  let verified = true;
  if (remote.offline) {
    if (!ours || catalog.meta("lease_held") !== 1) {
      throw new Error(
        `objstore device: cannot reach ${store.description} to take the writer lease of volume ${options.storeName}` +
          (ours ? "; it was closed cleanly, so the store has everything: try again when the store is reachable" : ""),
      );
    }
    lease = { record: { epoch: localEpoch, host: "", pid: 0, since: "", storeDir: options.storeDir, nonce: localNonce }, fresh: false, weak: false };
    verified = false;
  } else {
    lease = await acquireLease({
      store,
      volume: options.storeName,
      storeDir: options.storeDir,
      takeover: options.takeover ?? false,
      local: ours && localEpoch > 0 ? { epoch: localEpoch, nonce: localNonce } : undefined,
      log,
    });
  }
  const epoch = lease.record.epoch;
  const pending = ours ? pendingLocal(catalog) : 0;
  // The catalog is current when this cache wrote the epoch being resumed, or the one just before a fresh epoch.
  const current = ours && (!lease.fresh || (lease.record.tookOver === undefined && localEpoch === epoch - 1));
  if (!current && pending > 0) {
    throw new LeaseHeldError(
      `objstore device: the local cache ${catalog.path} holds ${pending} bytes of writes of volume ${options.storeName} ` +
        `that never reached the store (writer epoch ${localEpoch}), and another writer has written the volume since: ` +
        "they cannot be applied. Move the cache files away to open the volume as the store has it",
    );
  }
  const file = new CacheFile(files.fd, files.cachePath, manifest.objectSize);
  const stats = new TransferStats();
  const objects = new ObjectTable();
  let newest: CheckpointRef | undefined;
  let previous: CheckpointRef | undefined;
  let head: number;
  let v: Volume;
  if (current) {
    const rows = catalog.objects();
    for (const row of rows) objects.add(LogObject.fromRow(row));
    const map = new ExtentMap(manifest.size, { load: (p) => catalog.page(p), indexes: () => catalog.pageIndexes() }, objects.adjust);
    v = new Volume({ name: options.storeName, manifest, store, codec, catalog, file, map, objects, stats, log });
    const row = (name: string): CheckpointRef | undefined => {
      const r = catalog.snapshots().find((s) => s.name === name);
      return r === undefined ? undefined : { seq: r.seq, epoch: r.epoch, refs: unpackRefs(r.refs), bytes: 0 };
    };
    newest = row(HEAD_ROW);
    previous = row(PREVIOUS_ROW);
    head = Math.max(v.baseSeq, newest?.seq ?? 0, ...rows.map((r) => r.seq));
  } else {
    catalog.clear();
    const build = () => {
      const map = new ExtentMap(manifest.size, { load: (p) => catalog.page(p), indexes: () => catalog.pageIndexes() }, objects.adjust);
      return new Volume({ name: options.storeName, manifest, store, codec, catalog, file, map, objects, stats, log });
    };
    const cold = await coldOpen({ store, codec, log }, options.storeName, manifest, catalog, objects, build);
    v = cold.v;
    head = cold.head;
    newest = cold.checkpoint;
  }
  v.epoch = epoch;
  const punch = prepareSlots(v, options.persistCache ?? false, current);
  let open = [...objects.values()].find((o) => o.state === OPEN);
  if (open === undefined) {
    open = new LogObject(head + 1, epoch, OPEN);
    objects.add(open);
  }
  // Objects not uploaded yet go to the store under the epoch this daemon writes as.
  for (const o of objects.values()) if (o.state !== STORED && o.epoch !== epoch) o.epoch = epoch;
  const meta = () => ({ volume_id: manifest.volumeId, manifest: new TextDecoder().decode(encodeManifest(manifest)), epoch, lease_nonce: lease.record.nonce, lease_held: 1 });
  const committer = new Committer(v, meta);
  const cache = new ReadCache(v, options.diskCache ?? 0, committer);
  for (const o of objects.values()) if (o.state === STORED) cache.adopt(o);
  const writer = new LogWriter(v, committer, open);
  cache.pendingBytes = () => writer.pendingBytes();
  const held = new HeldLease(store, options.storeName, epoch, verified);
  const uploader = new Uploader(v, writer, committer, cache, held, options.concurrency ?? DEFAULT_CONCURRENCY, storedPrefix(v, open.seq));
  uploader.notify = options.notify;
  const checkpointer = new Checkpointer(v, writer, uploader, committer, cache, newest, previous);
  const gc = new Collector(v, writer, cache, checkpointer, options.gcThreshold ?? DEFAULT_GC_THRESHOLD);
  const runtime = new ObjstoreRuntime({
    v,
    committer,
    cache,
    writer,
    uploader,
    checkpointer,
    gc,
    lease: held,
    flushEveryMs: (options.flushEvery ?? DEFAULT_FLUSH_EVERY) * 1000,
    persistCache: options.persistCache ?? false,
  });
  try {
    await committer.commit(0);
    punch();
    if (!remote.offline) await syncSnapshots(v);
    else v.refreshPins();
    runtime.start();
    if (lease.fresh) await checkpointer.force();
  } catch (e) {
    await uploader.stop();
    throw e;
  }
  return runtime;
}

/** Bytes of writes in the catalog that the store does not have. */
function pendingLocal(catalog: ObjstoreCatalog): number {
  let n = 0;
  for (const row of catalog.objects()) if (row.state === OPEN || row.state === SEALED) n += row.dataLength + (row.touched !== null && row.touched.length > 0 ? 1 : 0);
  return n;
}

/**
 * The cache file as the catalog has it: slots no row names are punched (a crash can leave bytes there), and
 * without a persistent cache, stored objects' chunks are dropped. Returns the punching, to run once a commit has
 * recorded the dropped slots.
 */
export function prepareSlots(v: Volume, persist: boolean, current: boolean): () => void {
  const { file, objects } = v;
  const used: number[] = [];
  for (const o of objects.values()) {
    if (o.slot === undefined) continue;
    if (!current || (o.state === STORED && !persist)) {
      o.slot = undefined;
      o.present = undefined;
      o.rowDirty = true;
      continue;
    }
    used.push(o.slot);
  }
  const inUse = new Set(used);
  file.adoptSlots(used);
  return () => {
    for (let slot = 0; slot < file.slotCount; slot++) if (!inUse.has(slot)) file.zero(slot, 0, file.objectSize);
    file.trimEnd();
  };
}

/** The highest sequence number up to which every object is stored. */
function storedPrefix(v: Volume, openSeq: number): number {
  let lowest = openSeq;
  for (const o of v.objects.values()) if (o.state !== STORED && o.seq < lowest) lowest = o.seq;
  return lowest - 1;
}
