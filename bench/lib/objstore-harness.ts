/**
 * What every section of the objstore bench (bench/objstore.ts) runs on: a volume opened in-process on a fresh
 * cache directory over a counting store, each configuration's run measured against the other load on the box, and
 * the sequential passes that fill and read a volume.
 */
import { mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { openObjstoreDevice, type ObjstoreDevice, type ObjstoreDeviceOptions } from "../../src/devices/objstore/index.ts";
import { openObjectStore, parseObjectStoreConfig } from "../../src/devices/objstore/store/config.ts";
import { CountingStore } from "./objstore-counting-store.ts";
import { type DataKind, pool, POOL_BYTES } from "./objstore-data.ts";
import { MiB, mb, now } from "./objstore-format.ts";
import type { Options } from "./objstore-options.ts";
import type { Place } from "./remote-stores.ts";
import { coresBusy, processCpuSeconds, quietGate, sampleCpu } from "./sys.ts";

/** A gauge from the device's stats by name; NaN if it has none of that name. */
export function gauge(dev: ObjstoreDevice, name: string): number {
  return dev.stats().gauges.find((g) => g.name === name)?.value ?? Number.NaN;
}

/** A fixed key so a volume reopens from another (empty) cache directory; the key file would live in the old one. */
const AES_KEY = `key:${"5a".repeat(32)}`;

export interface Volume {
  readonly dev: ObjstoreDevice;
  readonly store: CountingStore;
}

/** A volume as `Harness.open` hands it out: closing it also removes its cache directory. */
export type OpenVolume = Volume & { cacheDir: string };

/** Load of one configuration's run: the gate before it, and the box's CPU that neither this process nor the s3rver used. */
export interface Load {
  gateWaitedS: number;
  gateLoad: number;
  otherCores: number;
}

export type Loaded<T> = T & { load: Load };

/** One per run: opens the volumes each section measures and brackets every configuration with the load accounting. */
export class Harness {
  private seq = 0;
  /** The s3rver child's pid, whose CPU is ours, not other load. */
  s3Pid: number | undefined;
  constructor(readonly o: Options) {}

  /** Runs one configuration after the quiet gate, and says how much other work shared the box meanwhile. */
  async measured<T extends object>(fn: () => Promise<T>): Promise<Loaded<T>> {
    const gate = this.o.gate > 0 ? await quietGate(this.o.gate, 0.5, 30) : { waited: 0, load: Number.NaN };
    const own = () => processCpuSeconds(process.pid) + (this.s3Pid === undefined ? 0 : processCpuSeconds(this.s3Pid));
    const cpu0 = own();
    const box0 = sampleCpu();
    const t0 = now();
    const value = await fn();
    const seconds = (now() - t0) / 1000;
    const otherCores = coresBusy(box0, sampleCpu(), seconds).box - (own() - cpu0) / seconds;
    return { ...value, load: { gateWaitedS: gate.waited, gateLoad: gate.load, otherCores } };
  }

  /** Opens a volume of `backend` at `place` with a cache in a new directory; defaults: remote flush, no timer. */
  async open(place: Pick<Place, "kind" | "config">, name: string, extra: Partial<ObjstoreDeviceOptions>): Promise<OpenVolume> {
    const cacheDir = join(this.o.scratch, "caches", `${name}-${++this.seq}`);
    mkdirSync(cacheDir, { recursive: true });
    const store = new CountingStore(openObjectStore(place.kind, parseObjectStoreConfig(place.config), { localPath: join(cacheDir, "objects") }));
    const dev = await openObjstoreDevice({
      storeDir: cacheDir,
      storeName: name,
      store,
      aesKey: AES_KEY,
      aesMode: this.o.aes,
      compression: this.o.compress,
      flushMode: "remote",
      flushEvery: 3600,
      ...extra,
    });
    return { dev, store, cacheDir };
  }

  async close(v: OpenVolume): Promise<void> {
    await v.dev.close();
    rmSync(v.cacheDir, { recursive: true, force: true });
  }
}

/** Writes `bytes` from offset 0 in 1 MiB requests of `kind` data; resolves with the seconds taken. */
export async function writeSequential(dev: ObjstoreDevice, bytes: number, kind: DataKind): Promise<number> {
  const p = pool(kind);
  const t0 = now();
  for (let off = 0; off < bytes; off += MiB) {
    const at = off % POOL_BYTES;
    const r = dev.write(off, p.subarray(at, at + MiB));
    if (r instanceof Promise) await r;
  }
  return (now() - t0) / 1000;
}

/** Sequential 1 MiB reads of the whole volume with `qd` in flight; MB/s. */
export async function readSequential(dev: ObjstoreDevice, bytes: number, qd: number): Promise<number> {
  let next = 0;
  const t0 = now();
  await Promise.all(
    Array.from({ length: qd }, async () => {
      while (next < bytes) {
        const off = next;
        next += MiB;
        const r = dev.read(off, MiB);
        if (r instanceof Promise) await r;
      }
    }),
  );
  return mb(bytes, (now() - t0) / 1000);
}
