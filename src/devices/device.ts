/**
 * The device contract: what a usbd-tui block device implements. The engine (network export, kernel attach)
 * turns NBD requests into these calls; everything a device author needs to know is on this page.
 *
 * Offsets and lengths are byte counts (JavaScript numbers, exact up to 2^53). The engine checks every request
 * against `size` before calling the device, but a device must still reject an out-of-range call with a
 * `DeviceError("EINVAL")` (the conformance suite calls devices directly and checks this).
 *
 * Any method may return its result directly or as a Promise; returning directly saves a microtask on hot paths.
 * The engine may issue several calls concurrently (pipelined requests, several connections). A device must keep
 * each call atomic with respect to others on the same bytes or document that it is not (then it must report
 * `multiConn: false`).
 */

/** A value, or a promise of it: devices choose per call. */
export type MaybePromise<T> = T | Promise<T>;

/** Options carried by NBD command flags. */
export interface WriteOptions {
  /** Force Unit Access: the data must be durable (as after `flush`) before the call completes. */
  readonly fua?: boolean;
}

export interface ZeroOptions extends WriteOptions {
  /** The range must read back as zeros and stay allocated (NBD_CMD_FLAG_NO_HOLE): no hole may be punched. */
  readonly noHole?: boolean;
}

/** One run of bytes with the same allocation state, as reported to NBD `base:allocation` queries. */
export interface Extent {
  readonly length: number;
  /** The range is not allocated (a hole). */
  readonly hole: boolean;
  /** The range is known to read as zeros. */
  readonly zero: boolean;
}

/** What a device can do natively. The engine advertises only these and emulates the rest centrally. */
export interface DeviceCapabilities {
  /**
   * Honours `fua` on writes itself. Default false: the engine then emulates FUA by calling `flush` after the write.
   * FLUSH and FUA are always advertised (a kernel that sees no FLUSH turns its write cache off).
   */
  readonly fua?: boolean;
  /** `trim` releases space (otherwise the engine advertises no TRIM). Default true. */
  readonly trim?: boolean;
  /** `writeZeroes` is cheaper than writing zeros (enables NBD FAST_ZERO). Default: `writeZeroes` present. */
  readonly fastZero?: boolean;
  /** Every connection sees every other connection's completed writes and flushes (NBD CAN_MULTI_CONN). */
  readonly multiConn?: boolean;
  /** The device refuses writes. */
  readonly readOnly?: boolean;
  /** The data survives close and reopen (the conformance suite then tests reopening). */
  readonly persistent?: boolean;
  /**
   * `write` may receive one large client WRITE as several calls on consecutive ranges, as its bytes arrive,
   * which keeps each piece in the CPU cache between the socket and the device. Only for devices whose writes cost
   * nothing extra when split or unaligned (memory, a plain file). Writes with FUA always arrive whole. Default false.
   */
  readonly splitWrites?: boolean;
}

/** A named gauge shown by the dashboard and headless stats: dirty objects, cache bytes, dedup ratio, ... */
export interface DeviceGauge {
  readonly name: string;
  readonly value: number;
  /** How to show it: a byte count, a rate in bytes per second, a ratio, a plain count, or a fraction of `max` (a bar). */
  readonly unit: "bytes" | "bytes/s" | "ratio" | "count" | "seconds";
  readonly max?: number;
}

export interface DeviceStats {
  /** Device-specific gauges, in display order. */
  readonly gauges: readonly DeviceGauge[];
  /** The last error the device met in the background (an upload failing, a disk filling), if any. */
  readonly lastError?: string;
}

/**
 * Something a device has to tell about itself, for the event pane, `ctl events` and the log: `opened` (the store
 * was created or reopened: say which, and where), `progress` (background work finished, such as an upload round),
 * `error` (background work failed, such as the store becoming unreachable; shown as the device's error until
 * `recovered`), `recovered` (it works again), `notice` (something the user must keep or act on, such as a key the
 * device generated). Devices receive a `notify` callback where they are created (see DeviceOptions).
 */
export interface DeviceNotice {
  readonly kind: "opened" | "progress" | "error" | "recovered" | "notice";
  readonly message: string;
}

/** Accepted writes that are not yet in the device's final store (an object store that was unreachable). */
export interface UnsettledData {
  /** How much is waiting. */
  readonly bytes: number;
  /** Where it is kept meanwhile, durably: `/var/lib/usbd-tui/vm1.objstore.cache`. */
  readonly keptIn: string;
  /** Where it goes and when: `goes up to s3 bucket "usbd" at the next start`. */
  readonly destination: string;
}

/** What `reclaim` gave back. */
export interface ReclaimResult {
  /** Bytes of storage released: to the file system (a smaller file), to memory, or in the remote store. 0 if none. */
  readonly bytes: number;
  /** What was done, for people: "1,024 blocks freed; ...". */
  readonly detail: string;
}

/** What `createSnapshot` made. */
export interface NamedSnapshot {
  readonly name: string;
  /** ISO 8601. */
  readonly createdAt: string;
}

export interface BlockDevice {
  /** A short kind name shown to users ("mem", "file", ...). */
  readonly kind: string;
  /** Size in bytes. Fixed for the life of the device. */
  readonly size: number;
  /** Preferred I/O granularity in bytes (a power of two, 512..65536); the engine advertises it to clients. */
  readonly blockSize: number;
  readonly capabilities: DeviceCapabilities;

  /**
   * Reads `length` bytes at `offset`. The result must be exactly `length` bytes. It may be a view of the
   * device's own memory: the engine copies or sends it before it awaits anything else, so a view only has to stay
   * valid until the returned value (or promise) has been consumed in the same turn.
   */
  read(offset: number, length: number): MaybePromise<Uint8Array>;

  /** Writes `data` at `offset`. `data` belongs to the engine and is reused after the call completes: copy it. */
  write(offset: number, data: Uint8Array, options?: WriteOptions): MaybePromise<void>;

  /** Discards a range: later reads may return zeros or the old data, but must not fail. */
  trim(offset: number, length: number, options?: WriteOptions): MaybePromise<void>;

  /** Makes a range read as zeros. Optional: the engine emulates it with `write` when absent. */
  writeZeroes?(offset: number, length: number, options?: ZeroOptions): MaybePromise<void>;

  /** Allocation map for `base:allocation`; covers at least a prefix of the range. Absent: all data. */
  extents?(offset: number, length: number): MaybePromise<readonly Extent[]>;

  /**
   * Prefetches a range into the device's local cache (NBD_CMD_CACHE), so later reads of it do not wait for a slow
   * backing store. A hint: it never changes what any byte reads as, and a device that keeps all its data local
   * leaves it out (the engine then answers CACHE at once). The engine has checked the range.
   */
  cache?(offset: number, length: number): MaybePromise<void>;

  /** Makes every write completed before this call durable. */
  flush(): MaybePromise<void>;

  /** Flushes and releases resources. Idempotent; every call after it fails with DeviceError("ESHUTDOWN"). */
  close(): MaybePromise<void>;

  /** Device-specific gauges for the dashboard. */
  stats?(): DeviceStats;

  /**
   * Releases space the device holds for data nobody references any more (blocks whose last reference went away,
   * space a trim only marked as free), now rather than at some later point such as the next commit. Never changes
   * what any byte reads as. It may make earlier writes durable on the way, as `flush` does (the dedup device
   * commits). Optional: a device whose `trim` releases space at once leaves it out, and the dashboard's trim then
   * reports that there was nothing to reclaim.
   */
  reclaim?(): MaybePromise<ReclaimResult>;

  /**
   * Records a named, read-only point-in-time copy of everything written before the call, kept by the device's own
   * store (objstore: a checkpoint that garbage collection preserves). Optional: the engine refuses the request for
   * a device without it. It may flush on the way.
   */
  createSnapshot?(name: string): Promise<NamedSnapshot>;

  /**
   * Accepted data not yet in the device's final store, if any (undefined or 0 bytes: everything is there). Also
   * called after `close`, which must keep answering it: then it says what the close could not deliver, so a
   * shutdown that leaves data behind says how much and where, instead of exiting as if all were done.
   */
  unsettled?(): UnsettledData | undefined;
}

/** NBD error names a device may raise; the engine maps them to NBD error codes. */
export type DeviceErrorCode = "EPERM" | "EIO" | "ENOMEM" | "EINVAL" | "ENOSPC" | "EOVERFLOW" | "ENOTSUP" | "ESHUTDOWN";

/** The error a device throws so that the client receives a precise NBD error instead of EIO. */
export class DeviceError extends Error {
  constructor(
    readonly code: DeviceErrorCode,
    message: string,
  ) {
    super(message);
    this.name = "DeviceError";
  }
}

/** Throws DeviceError("EINVAL") unless [offset, offset+length) lies inside a device of `size` bytes. */
export function checkRange(size: number, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
    throw new DeviceError("EINVAL", `invalid range: offset ${offset}, length ${length}`);
  }
  if (offset + length > size) {
    throw new DeviceError("EINVAL", `range ${offset}+${length} ends past the device size ${size}`);
  }
}

/** Throws DeviceError("ESHUTDOWN") for calls on a closed device. */
export function checkOpen(closed: boolean, kind: string): void {
  if (closed) throw new DeviceError("ESHUTDOWN", `${kind} device is closed`);
}

/** Resolved capabilities with every default applied. */
export function resolveCapabilities(device: BlockDevice): Required<DeviceCapabilities> {
  const c = device.capabilities;
  return {
    fua: c.fua ?? false,
    trim: c.trim ?? true,
    fastZero: c.fastZero ?? device.writeZeroes !== undefined,
    multiConn: c.multiConn ?? false,
    readOnly: c.readOnly ?? false,
    persistent: c.persistent ?? false,
    splitWrites: c.splitWrites ?? false,
  };
}
