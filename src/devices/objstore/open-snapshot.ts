/**
 * Opening a volume read-only: a snapshot (--objstore-snapshot NAME), whose checkpoint is the whole map, or the
 * latest state (`readOnly`), a cold open as replay.ts describes. No lease is taken: another daemon may be writing.
 * Each has a cache of its own (`<volume>@<snapshot>.objstore.*`, `<volume>@latest...`); a snapshot's is reused
 * while it is the same snapshot, the latest state's is rebuilt at every open.
 */
import type { Logger } from "../../shared/log.ts";
import { CacheFile } from "./cache-file.ts";
import { volumeCodec } from "./codec/offloaded-codec.ts";
import { decodeManifest, encodeManifest } from "./codec/manifest.ts";
import { Committer } from "./committer.ts";
import { ExtentMap } from "./extent-map.ts";
import { LogWriter } from "./log-writer.ts";
import { readManifest, volumeKeys } from "./manifest-io.ts";
import { LogObject, ObjectTable, OPEN, STORED } from "./objects.ts";
import { prepareSlots, type LocalFiles } from "./open.ts";
import type { ObjstoreDeviceOptions } from "./options.ts";
import { ReadCache } from "./read-cache.ts";
import { coldOpen, loadCheckpoint } from "./replay.ts";
import { ObjstoreRuntime } from "./runtime.ts";
import { readSnapshot } from "./snapshots.ts";
import type { ObjectStore } from "./store/types.ts";
import { TransferStats } from "./transfer-stats.ts";
import { Volume } from "./volume.ts";
import { volumeIdBytes } from "./codec/manifest.ts";

export async function openSnapshot(options: ObjstoreDeviceOptions, store: ObjectStore, files: LocalFiles, log: Logger): Promise<ObjstoreRuntime> {
  const name = options.snapshot;
  const { catalog } = files;
  const remote = await readManifest(store, options.storeName, undefined, log);
  if (remote.bytes === undefined) throw new Error(`objstore device: ${store.description} has no volume ${options.storeName}`);
  const manifest = decodeManifest(remote.bytes, remote.where);
  const keys = volumeKeys(options, manifest, false);
  const codec = volumeCodec(manifest, keys, log, options.storeName);
  const objects = new ObjectTable();
  const file = new CacheFile(files.fd, files.cachePath, manifest.objectSize);
  const build = () => {
    const map = new ExtentMap(manifest.size, { load: (p) => catalog.page(p), indexes: () => catalog.pageIndexes() }, objects.adjust);
    return new Volume({ name: options.storeName, manifest, store, codec, catalog, file, map, objects, stats: new TransferStats(), log });
  };
  let v: Volume;
  let head: number;
  let which: string;
  let current = false;
  if (name === undefined) {
    catalog.clear();
    const cold = await coldOpen({ store, codec, log }, options.storeName, manifest, catalog, objects, build);
    v = cold.v;
    head = cold.head;
    which = "latest";
  } else {
    const record = await readSnapshot(store, options.storeName, name);
    if (record === undefined) throw new Error(`objstore device: volume ${options.storeName} in ${store.description} has no snapshot named ${name}`);
    which = `${manifest.volumeId}:${record.seq}.${record.epoch}`;
    current = catalog.meta("snapshot") === which;
    if (current) for (const row of catalog.objects()) objects.add(LogObject.fromRow(row));
    else {
      catalog.clear();
      await loadCheckpoint({ store, codec }, catalog, objects, { seq: record.seq, epoch: record.epoch, owner: options.storeName, volumeId: volumeIdBytes(manifest) });
    }
    v = build();
    head = record.seq;
  }
  const punch = prepareSlots(v, options.persistCache ?? false, current);
  const committer = new Committer(v, () => ({ snapshot: which, manifest: new TextDecoder().decode(encodeManifest(manifest)) }));
  const cache = new ReadCache(v, options.diskCache ?? 0, committer);
  for (const o of objects.values()) if (o.state === STORED) cache.adopt(o);
  const writer = new LogWriter(v, committer, new LogObject(head + 1, 0, OPEN));
  options.notify?.({ kind: "opened", message: `opened ${name === undefined ? "the latest state" : `snapshot ${name}`} of volume ${options.storeName} in ${store.description}, read-only` });
  await committer.commit(0);
  punch();
  return new ObjstoreRuntime({ v, committer, cache, writer, flushEveryMs: 0, persistCache: options.persistCache ?? false });
}
