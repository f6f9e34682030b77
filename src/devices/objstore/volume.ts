/**
 * What every part of an open objstore volume shares: its manifest, the store, the codec, the local catalog and cache
 * file, the map, the object table and the counters; and where each log object lives in the store (a clone reads
 * the objects of the volumes it was cloned from under their names).
 */
import type { Logger } from "../../shared/log.ts";
import type { CacheFile } from "./cache-file.ts";
import { unpackRefs } from "./refs.ts";
import type { ObjstoreCatalog } from "./catalog.ts";
import type { ObjectCodec } from "./codec/log-object.ts";
import { volumeIdBytes, type Manifest } from "./codec/manifest.ts";
import type { ExtentMap } from "./extent-map.ts";
import { logKey } from "./layout.ts";
import type { ObjectTable } from "./objects.ts";
import type { ObjectStore } from "./store/types.ts";
import type { TransferStats } from "./transfer-stats.ts";

export interface VolumeParts {
  readonly name: string;
  readonly manifest: Manifest;
  readonly store: ObjectStore;
  readonly codec: ObjectCodec;
  readonly catalog: ObjstoreCatalog;
  readonly file: CacheFile;
  readonly map: ExtentMap;
  readonly objects: ObjectTable;
  readonly stats: TransferStats;
  readonly log: Logger;
}

/** The owner of a log object: the volume whose namespace holds it, and that volume's id (its objects' AAD). */
export interface ObjectOwner {
  readonly name: string;
  readonly volumeId: Uint8Array;
  /** Whether it is this volume's own object (only those may be compacted or deleted). */
  readonly own: boolean;
}

export class Volume {
  readonly name: string;
  readonly manifest: Manifest;
  readonly store: ObjectStore;
  readonly codec: ObjectCodec;
  readonly catalog: ObjstoreCatalog;
  readonly file: CacheFile;
  readonly map: ExtentMap;
  readonly objects: ObjectTable;
  readonly stats: TransferStats;
  readonly log: Logger;
  readonly volumeId: Uint8Array;
  readonly objectSize: number;
  readonly chunkSize: number;
  /** The writer epoch this daemon writes under (0 when read-only). */
  epoch = 0;
  /** What the snapshots keep: log objects their checkpoints refer to, and those checkpoints (`seq.epoch`). */
  pins: { readonly objects: ReadonlySet<number>; readonly checkpoints: ReadonlySet<string> } = { objects: new Set(), checkpoints: new Set() };
  private readonly owners: ReadonlyArray<{ readonly upTo: number; readonly owner: ObjectOwner }>;
  private readonly self: ObjectOwner;

  constructor(parts: VolumeParts) {
    this.name = parts.name;
    this.manifest = parts.manifest;
    this.store = parts.store;
    this.codec = parts.codec;
    this.catalog = parts.catalog;
    this.file = parts.file;
    this.map = parts.map;
    this.objects = parts.objects;
    this.stats = parts.stats;
    this.log = parts.log;
    this.volumeId = volumeIdBytes(parts.manifest);
    this.objectSize = parts.manifest.objectSize;
    this.chunkSize = parts.manifest.chunkSize;
    this.self = { name: parts.name, volumeId: this.volumeId, own: true };
    this.owners = parts.manifest.bases.map((b) => ({ upTo: b.upTo, owner: { name: b.volume, volumeId: volumeIdBytes(b.volumeId), own: false } }));
  }

  /** Highest sequence number that belongs to a base volume (0 for a volume of its own). */
  get baseSeq(): number {
    return this.owners.length === 0 ? 0 : this.owners[this.owners.length - 1]!.upTo;
  }

  owner(seq: number): ObjectOwner {
    for (const o of this.owners) if (seq <= o.upTo) return o.owner;
    return this.self;
  }

  keyOf(seq: number, epoch: number): string {
    return logKey(this.owner(seq).name, seq, epoch);
  }

  /** Recomputes `pins` from the catalog's snapshot rows (after they changed). */
  refreshPins(): void {
    const objects = new Set<number>();
    const checkpoints = new Set<string>();
    for (const s of this.catalog.snapshots()) {
      if (s.name.startsWith("@")) continue;
      for (const seq of unpackRefs(s.refs)) objects.add(seq);
      checkpoints.add(`${s.seq}.${s.epoch}`);
    }
    this.pins = { objects, checkpoints };
  }
}
