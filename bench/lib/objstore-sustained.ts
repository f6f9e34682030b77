/**
 * The objstore's sustained write cost (bench/objstore.ts --sections sustained): a volume filled once, then written
 * for twice its size with one pattern (4 KiB, 64 KiB or 1 MiB random writes of incompressible data, or 1 MiB
 * sequential passes), with local FLUSHes every 64 MiB, the disk cache bounded so that writes wait for uploads as on
 * a real link, and the GC running as it would. Then the log is uploaded and the GC left to finish. Counted from the
 * store's side: every byte PUT (log objects, GC copies, checkpoints, leases), the bytes downloaded (GC reads), and
 * what the bucket holds at the end against the volume's size; then the size of the map (in memory, in the catalog, as
 * a checkpoint) and how long a cold open of the result takes.
 */
import { existsSync, statSync } from "node:fs";
import type { ObjstoreDevice, ObjstoreDeviceOptions } from "../../src/devices/objstore/index.ts";
import type { ObjectStore } from "../../src/devices/objstore/store/types.ts";
import { prng } from "./objstore-data.ts";
import { gauge } from "./objstore-harness.ts";

export const SUSTAINED_PATTERNS = ["4k-random", "64k-random", "1m-random", "1m-seq"] as const;
export type SustainedPattern = (typeof SUSTAINED_PATTERNS)[number];

const KiB = 1024;
const MiB = 1024 * KiB;

/** What the bench's counting store reports. */
export interface CountedStore extends ObjectStore {
  snapshot(): { puts: number; putBytes: number; gets: number; getBytes: number; deletes: number };
}

export interface SustainedRow {
  backend: string;
  pattern: SustainedPattern;
  objsize: number;
  threshold: number;
  volume: number;
  written: number;
  seconds: number;
  /** Every byte PUT during the write phase and the settling after it. */
  uploaded: number;
  puts: number;
  /** Of `uploaded`: GC copies (plaintext bytes the GC wrote into the log) and checkpoints (stored bytes). */
  gcBytes: number;
  checkpointBytes: number;
  downloaded: number;
  amplification: number;
  /** Bytes the bucket holds at the end (all objects of the volume), over the volume's size. */
  storeBytes: number;
  spaceOverhead: number;
  liveRatio: number;
  deletes: number;
  /** The map at the end: extents, bytes of memory its pages take, the catalog file, the newest checkpoint. */
  extents: number;
  mapMemory: number;
  catalogBytes: number;
  checkpointSize: number;
  /** A cold open of the result on an empty cache directory: seconds, and the GETs it made. */
  coldOpenS: number;
  coldOpenGets: number;
}

const sizes: Record<SustainedPattern, number> = { "4k-random": 4 * KiB, "64k-random": 64 * KiB, "1m-random": MiB, "1m-seq": MiB };

/**
 * Runs one pattern. `open` opens (creating) the volume on a fresh place with the given settings and its counting
 * store; `data` is a pool of incompressible bytes at least 16 MiB long.
 */
export async function sustained(
  open: (extra: Partial<ObjstoreDeviceOptions>) => Promise<{ dev: ObjstoreDevice; store: CountedStore; close(): Promise<void> }>,
  spec: { backend: string; pattern: SustainedPattern; objsize: number; threshold: number; volume: number; data: Uint8Array; log: (line: string) => void },
): Promise<SustainedRow> {
  const { pattern, volume, data } = spec;
  const v = await open({ size: volume, objectSize: spec.objsize, gcThreshold: spec.threshold, flushMode: "local", flushEvery: 5, diskCache: 256 * MiB });
  let closed = false;
  try {
    const write = async (offset: number, bytes: Uint8Array) => {
      const r = v.dev.write(offset, bytes);
      if (r instanceof Promise) await r;
    };
    const pick = (i: number, n: number) => data.subarray((i * n) % (data.length - n), ((i * n) % (data.length - n)) + n);
    // The fill: sequential, everything stored, then a settled start.
    for (let off = 0, i = 0; off < volume; off += MiB, i++) await write(off, pick(i, MiB));
    await v.dev.flush();
    await (v.dev.runtime.flushRemote() as Promise<void>);
    const before = v.store.snapshot();
    const gcBefore = gauge(v.dev, "GC bytes");
    const cpBefore = v.dev.runtime.checkpointer?.checkpointBytes ?? 0;
    const n = sizes[pattern];
    const total = 2 * volume;
    const rnd = prng(n + 99);
    const started = performance.now();
    let sinceFlush = 0;
    for (let done = 0, i = 0; done < total; done += n, i++) {
      const offset = pattern === "1m-seq" ? done % volume : Math.floor(rnd() * (volume / n)) * n;
      await write(offset, pick(i + 7, n));
      sinceFlush += n;
      if (sinceFlush >= 64 * MiB) {
        sinceFlush = 0;
        await v.dev.flush();
      }
      // Writes are synchronous: let uploads and the GC run now and then, as a client's round trips would.
      if (i % 256 === 255) await Bun.sleep(0);
    }
    await v.dev.flush();
    await v.dev.runtime.flushRemote();
    // Let the GC finish what the writes left below its threshold, as it would while the volume idles.
    const gc = v.dev.runtime.gc!;
    for (let rounds = 0; rounds < 600 && (gc.busy || gc.candidates().length > 0); rounds++) await Bun.sleep(100);
    await v.dev.runtime.flushRemote();
    await v.dev.runtime.checkpointer!.force();
    const seconds = (performance.now() - started) / 1000;
    const after = v.store.snapshot();
    let storeBytes = 0;
    for await (const info of v.store.list(`${v.dev.runtime.v.name}/`)) storeBytes += info.size;
    const uploaded = after.putBytes - before.putBytes;
    const runtime = v.dev.runtime;
    const extents = runtime.v.map.cachedExtents;
    const mapMemory = runtime.v.map.memoryBytes;
    const catalogBytes = statSync(runtime.v.catalog.path).size + (existsSync(`${runtime.v.catalog.path}-wal`) ? statSync(`${runtime.v.catalog.path}-wal`).size : 0);
    const checkpointSize = runtime.checkpointer?.newest?.bytes ?? 0;
    const row: SustainedRow = {
      backend: spec.backend,
      pattern,
      objsize: spec.objsize,
      threshold: spec.threshold,
      volume,
      written: total,
      seconds,
      uploaded,
      puts: after.puts - before.puts,
      gcBytes: gauge(v.dev, "GC bytes") - gcBefore,
      checkpointBytes: (v.dev.runtime.checkpointer?.checkpointBytes ?? 0) - cpBefore,
      downloaded: after.getBytes - before.getBytes,
      amplification: uploaded / total,
      storeBytes,
      spaceOverhead: storeBytes / volume,
      liveRatio: gauge(v.dev, "live ratio"),
      deletes: after.deletes - before.deletes,
      extents,
      mapMemory,
      catalogBytes,
      checkpointSize,
      coldOpenS: 0,
      coldOpenGets: 0,
    };
    await v.close();
    closed = true;
    const t0 = performance.now();
    const cold = await open({});
    row.coldOpenS = (performance.now() - t0) / 1000;
    row.coldOpenGets = cold.store.snapshot().gets;
    await cold.close();
    spec.log(
      `sustained ${spec.backend} ${pattern} ${spec.objsize / MiB} MiB objects, GC ${spec.threshold}: amplification ${row.amplification.toFixed(2)}x ` +
        `(GC ${(row.gcBytes / MiB).toFixed(0)} MiB, checkpoints ${(row.checkpointBytes / MiB).toFixed(1)} MiB), store ${row.spaceOverhead.toFixed(2)}x the volume, ` +
        `${(total / seconds / 1e6).toFixed(0)} MB/s, ${row.puts} PUTs; ${extents} extents (${(mapMemory / MiB).toFixed(1)} MiB in memory, catalog ` +
        `${(catalogBytes / MiB).toFixed(1)} MiB, checkpoint ${(checkpointSize / MiB).toFixed(1)} MiB), cold open ${row.coldOpenS.toFixed(2)} s with ${row.coldOpenGets} GETs`,
    );
    return row;
  } finally {
    if (!closed) await v.close();
  }
}
