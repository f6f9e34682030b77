/**
 * Child of the objstore crash test: opens the volume (s3 backend at the parent's s3rver, so the store outlives the
 * kill; 4 MiB in 64 KiB log objects sealed every 0.1 s, two uploads at a time, GC at a live fraction of 0.6, so
 * uploads, checkpoints and compaction are nearly always under way), then runs the dedup crash workload's epochs from
 * START on, printing "flushed N inflight K" after each epoch's flush returned (K: uploads in flight at that moment),
 * until it is killed.
 * Usage: bun objstore-crash-child.ts DIR NAME SEED START ENDPOINT DISKCACHE FLUSHMODE PERSISTCACHE
 */
import fs from "node:fs";
import { openObjstoreDevice, type ObjstoreDeviceOptions } from "../../src/devices/objstore/index.ts";
import type { FlushMode } from "../../src/devices/objstore/layout.ts";
import { s3ServerConfigJson } from "../helpers/s3-server.ts";
import { applyToDevice, opsFor } from "./dedup-crash-ops.ts";

/** 64 segments: a full read-back (a new machine fetches every one) stays short. */
export const CRASH_VOLUME_SIZE = 4 * 1024 * 1024;
export const CRASH_OBJECT_SIZE = 64 * 1024;

/** What varies between the opens of the crash volume. */
export interface CrashCacheSettings {
  readonly diskCache: number;
  readonly flushMode: FlushMode;
  readonly persistCache: boolean;
}

/** How every open of the crash volume looks (the child, the parent's reopen, a "new machine"): same store, same key. */
export function crashVolumeOptions(storeDir: string, storeName: string, endpoint: string, settings: CrashCacheSettings): ObjstoreDeviceOptions {
  return {
    storeDir,
    storeName,
    size: CRASH_VOLUME_SIZE,
    objectSize: CRASH_OBJECT_SIZE,
    kind: "s3",
    config: s3ServerConfigJson({ endpoint }),
    aesKey: `key:${"5a".repeat(32)}`,
    flushEvery: 0.1,
    concurrency: 2,
    gcThreshold: 0.6,
    ...settings,
  };
}

if (import.meta.main) {
  const [dir, name, seedText, startText, endpoint, diskCache, flushMode, persistCache] = process.argv.slice(2);
  const seed = Number(seedText);
  const dev = await openObjstoreDevice(
    crashVolumeOptions(dir!, name!, endpoint!, { diskCache: Number(diskCache), flushMode: flushMode === "remote" ? "remote" : "local", persistCache: persistCache === "persist" }),
  );
  const inFlight = (): number => dev.stats().gauges.find((g) => g.name === "uploads in flight")?.value ?? 0;
  // writeSync: the line must be out before the next epoch starts, or a kill could lose a flush the device made.
  const say = (line: string): void => void fs.writeSync(1, `${line}\n`);
  say("ready");
  for (let epoch = Number(startText); ; epoch++) {
    for (const op of opsFor(seed, epoch, CRASH_VOLUME_SIZE)) await applyToDevice(dev, op);
    await dev.flush();
    say(`flushed ${epoch} inflight ${inFlight()}`);
  }
}
