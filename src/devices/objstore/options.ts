/** What an objstore volume is opened with: the --objstore-* flags and the store settings, with their checks. */
import type { Logger } from "../../shared/log.ts";
import type { DeviceNotice } from "../device.ts";
import type { AesMode, FlushMode, ObjstoreCompression } from "./layout.ts";
import type { ObjectStore } from "./store/types.ts";

export interface ObjstoreDeviceOptions {
  /** Directory of the local cache and catalog (--store-dir); it must exist. */
  readonly storeDir: string;
  /** The volume's name (--store-name): the prefix of its objects and of its local files. */
  readonly storeName: string;
  /** Size in bytes: required for a new volume; for an existing one it must equal the manifest's. */
  readonly size?: number;
  /** Size for a new volume when `size` is not given; an existing volume keeps its own. */
  readonly defaultSize?: number;
  /** Advertised block size (--block-size). */
  readonly blockSize?: number;
  /** --objstore-kind (default s3). */
  readonly kind?: string;
  /** --objstore-cfg: inline JSON or the path of a JSON file. */
  readonly config?: string;
  /** A store to use instead of opening one from kind and config (tests that inject faults or count requests). */
  readonly store?: ObjectStore;
  /** --objstore-objsize for a new volume (default 4 MiB); an existing one keeps its own. */
  readonly objectSize?: number;
  /** --objstore-diskcache: bytes of local cache; 0 (default) for no bound. */
  readonly diskCache?: number;
  /** --objstore-persistcache: keep cached chunks of stored log objects across restarts. */
  readonly persistCache?: boolean;
  /** --objstore-compress for a new volume (default lz4). */
  readonly compression?: ObjstoreCompression;
  /** --objstore-aesmode for a new volume (default aes-gcm). */
  readonly aesMode?: AesMode;
  /** --objstore-aeskey: key:<hex|base64>, file:<path> or env:<VARIABLE>. */
  readonly aesKey?: string;
  /** --objstore-concurflush: uploads in parallel (default 8). */
  readonly concurrency?: number;
  /**
   * --objstore-flushevery in seconds (default 10): an open log object is sealed and uploaded after this long; 0: not
   * on a timer (full objects, a remote FLUSH, snapshots, reclaim and close still upload).
   */
  readonly flushEvery?: number;
  /** --objstore-flush-mode: whether FLUSH also waits for the uploads (default local). */
  readonly flushMode?: FlushMode;
  /** --objstore-takeover: take the writer lease from the daemon holding it (which is then fenced). */
  readonly takeover?: boolean;
  /** --objstore-snapshot NAME: open that snapshot of the volume, read-only. */
  readonly snapshot?: string;
  /**
   * Open the volume as the store has it now, read-only, without the writer lease (a cold open into its own cache,
   * `<volume>@latest`): for inspecting a volume another daemon writes, and for tests of what the store alone holds.
   */
  readonly readOnly?: boolean;
  /** --objstore-clone-of VOLUME@SNAPSHOT: create this volume as a clone of that snapshot (when it does not exist). */
  readonly cloneOf?: string;
  /** --objstore-gc-threshold: live fraction below which a log object is compacted (default 0.5; 0 turns GC off). */
  readonly gcThreshold?: number;
  readonly log?: Logger;
  /** Told how the volume opened (created or reopened, a generated key), of uploads, of the store failing and back, of a takeover. */
  readonly notify?: (notice: DeviceNotice) => void;
}

export const DEFAULT_CONCURRENCY = 8;
export const DEFAULT_FLUSH_EVERY = 10;

export function checkOptions(options: ObjstoreDeviceOptions): void {
  const atLeast = (name: string, value: number | undefined, min: number) => {
    if (value !== undefined && (!Number.isFinite(value) || value < min)) throw new RangeError(`objstore device: ${name} must be at least ${min}, got ${value}`);
  };
  atLeast("--objstore-concurflush", options.concurrency, 1);
  if (options.flushEvery !== 0) atLeast("--objstore-flushevery", options.flushEvery, 0.05);
  const o = options.objectSize;
  if (o !== undefined && (!Number.isInteger(o) || o < 4096 || o > 1 << 30 || (o & (o - 1)) !== 0)) {
    throw new RangeError(`objstore device: --objstore-objsize must be a power of two from 4KiB to 1GiB, got ${o}`);
  }
  const d = options.diskCache;
  if (d !== undefined && (!Number.isSafeInteger(d) || d < 0)) throw new RangeError(`objstore device: --objstore-diskcache must be a size, got ${d}`);
  const t = options.gcThreshold;
  if (t !== undefined && (!Number.isFinite(t) || t < 0 || t >= 1)) throw new RangeError(`objstore device: --objstore-gc-threshold must be from 0 (off) to below 1, got ${t}`);
  if (options.snapshot !== undefined && options.cloneOf !== undefined) {
    throw new RangeError("objstore device: --objstore-snapshot opens an existing snapshot read-only and --objstore-clone-of makes a new volume; give one of them");
  }
  if (options.readOnly === true && (options.snapshot !== undefined || options.cloneOf !== undefined || options.takeover === true)) {
    throw new RangeError("objstore device: a read-only open of the latest state takes no snapshot, clone or takeover");
  }
  if (options.snapshot !== undefined && options.takeover === true) throw new RangeError("objstore device: --objstore-takeover has no meaning for a read-only snapshot");
}
