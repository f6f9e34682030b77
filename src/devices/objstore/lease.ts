/**
 * One writer per volume: the writer lease. Each daemon that opens a volume for writing works under a writer epoch,
 * `<volume>/lease/<epoch>`, created with a conditional create (only if absent) so that of two daemons racing for
 * the same epoch exactly one wins. A clean close adds `<epoch>.released`. Opening finds the highest epoch:
 * - released (or none yet): take the next epoch;
 * - held by this very cache (its catalog names the epoch and the lease's nonce): a restart after a crash, go on
 *   under the same epoch;
 * - held by anyone else: refuse, naming the holder, unless --objstore-takeover, which takes the next epoch anyway.
 * The old writer learns it was fenced when it next checks: after its uploads, before a remote FLUSH returns, it
 * looks for the epoch after its own. Replay ignores its later objects (see replay.ts), so it cannot change the
 * volume even before it notices.
 *
 * Stores that cannot create conditionally (Swift's s3api answers 501) get a plain put and a read back of the nonce:
 * two daemons started within the same moment could then both believe they won. That is logged as a warning.
 */
import os from "node:os";
import type { Logger } from "../../shared/log.ts";
import { leaseKey, leasePrefix, releasedKey } from "./layout.ts";
import type { ObjectStore } from "./store/types.ts";

export interface LeaseRecord {
  readonly epoch: number;
  readonly host: string;
  readonly pid: number;
  /** When the epoch was taken, ISO 8601. */
  readonly since: string;
  readonly storeDir: string;
  /** Random, per epoch: how a cache recognises its own lease after a crash. */
  readonly nonce: string;
  /** The epoch this one fenced, for a takeover. */
  readonly tookOver?: { readonly epoch: number; readonly host: string; readonly pid: number } | undefined;
}

/** Another daemon holds the volume; the CLI exits 2 with this message. */
export class LeaseHeldError extends Error {
  override readonly name = "LeaseHeldError";
}

/** How the lease was obtained. */
export interface Lease {
  readonly record: LeaseRecord;
  /** A new epoch (a fresh start, or a takeover), as opposed to resuming one after a crash. */
  readonly fresh: boolean;
  /** The store could not create conditionally: the lease is advisory. */
  readonly weak: boolean;
}

export function describeHolder(r: LeaseRecord): string {
  return `host ${r.host}, pid ${r.pid}, since ${r.since} (writer epoch ${r.epoch}, cache ${r.storeDir})`;
}

async function readJson(store: ObjectStore, key: string): Promise<unknown> {
  const got = await store.get(key);
  if (got === undefined) return undefined;
  try {
    return JSON.parse(new TextDecoder().decode(got.body));
  } catch {
    return {};
  }
}

function asRecord(value: unknown, epoch: number): LeaseRecord {
  const o = (typeof value === "object" && value !== null ? value : {}) as Record<string, unknown>;
  return {
    epoch,
    host: typeof o.host === "string" ? o.host : "?",
    pid: typeof o.pid === "number" ? o.pid : 0,
    since: typeof o.since === "string" ? o.since : "?",
    storeDir: typeof o.storeDir === "string" ? o.storeDir : "?",
    nonce: typeof o.nonce === "string" ? o.nonce : "",
  };
}

export interface AcquireOptions {
  readonly store: ObjectStore;
  readonly volume: string;
  readonly storeDir: string;
  readonly takeover: boolean;
  /** The epoch and nonce this cache last wrote under, if any. */
  readonly local: { readonly epoch: number; readonly nonce: string } | undefined;
  readonly log: Logger;
}

/** The epochs in the store: the highest one, and whether it was released. */
export async function highestEpoch(store: ObjectStore, volume: string): Promise<{ epoch: number; released: boolean }> {
  const prefix = leasePrefix(volume);
  let epoch = 0;
  const released = new Set<number>();
  for await (const info of store.list(prefix)) {
    const m = /^([0-9a-f]{8})(\.released)?$/.exec(info.key.slice(prefix.length));
    if (m === null) continue;
    const e = Number.parseInt(m[1]!, 16);
    if (m[2] !== undefined) released.add(e);
    else epoch = Math.max(epoch, e);
  }
  return { epoch, released: released.has(epoch) };
}

/** Takes (or resumes, or takes over) the writer lease of `volume`. Throws LeaseHeldError when another daemon holds it. */
export async function acquireLease(o: AcquireOptions): Promise<Lease> {
  const { store, volume, log } = o;
  for (let attempt = 0; attempt < 5; attempt++) {
    const top = await highestEpoch(store, volume);
    if (top.epoch > 0 && !top.released) {
      const holder = asRecord(await readJson(store, leaseKey(volume, top.epoch)), top.epoch);
      if (o.local !== undefined && o.local.epoch === top.epoch && o.local.nonce === holder.nonce) {
        return { record: holder, fresh: false, weak: false };
      }
      if (!o.takeover) {
        throw new LeaseHeldError(
          `objstore volume ${volume} in ${store.description} is in use by another writer: ${describeHolder(holder)}. ` +
            "Stop that daemon, or pass --objstore-takeover to fence it (it can then write nothing more to the volume)",
        );
      }
      const record = newRecord(top.epoch + 1, o.storeDir, { epoch: holder.epoch, host: holder.host, pid: holder.pid });
      const got = await claim(store, volume, record, log);
      if (got !== undefined) {
        log.log("warn", `objstore: took over volume ${volume} from ${describeHolder(holder)}; that writer is fenced`, { epoch: record.epoch });
        return got;
      }
      continue;
    }
    const got = await claim(store, volume, newRecord(top.epoch + 1, o.storeDir, undefined), log);
    if (got !== undefined) return got;
  }
  throw new LeaseHeldError(`objstore volume ${volume} in ${store.description}: other daemons keep taking the writer lease at the same time; try again`);
}

function newRecord(epoch: number, storeDir: string, tookOver: LeaseRecord["tookOver"]): LeaseRecord {
  const nonce = Buffer.from(crypto.getRandomValues(new Uint8Array(16))).toString("hex");
  return { epoch, host: os.hostname(), pid: process.pid, since: new Date().toISOString(), storeDir, nonce, ...(tookOver === undefined ? {} : { tookOver }) };
}

/** Creates the lease object of `record.epoch`; undefined when another daemon created that epoch first. */
async function claim(store: ObjectStore, volume: string, record: LeaseRecord, log: Logger): Promise<Lease | undefined> {
  const key = leaseKey(volume, record.epoch);
  const body = new TextEncoder().encode(`${JSON.stringify(record, null, 2)}\n`);
  const result = await store.createIfAbsent(key, body);
  if (result.outcome === "created" && store.createCaveat === undefined) return { record, fresh: true, weak: false };
  if (result.outcome === "exists") return undefined;
  if (result.outcome === "unsupported") {
    // No conditional create here: put, then make sure ours is the record that stayed.
    if ((await store.head(key)) !== undefined) return undefined;
    await store.put(key, body);
  }
  // Unsupported, or a create that overlapping creates can also win (Swift, createCaveat): ours must be what stayed.
  await Bun.sleep(50);
  const back = asRecord(await readJson(store, key), record.epoch);
  if (back.nonce !== record.nonce) return undefined;
  log.log("warn", "objstore: the store cannot create objects conditionally, so the writer lease is advisory: two daemons started at the same moment could both write", {
    store: store.description,
    why: result.outcome === "unsupported" ? result.reason : (store.createCaveat ?? ""),
  });
  return { record, fresh: true, weak: true };
}

/**
 * The lease a writer holds: `check` looks for the epoch after its own (a takeover), `release` marks a clean close.
 * `pending` is set when the volume was opened from the cache alone (the store unreachable): the first check then
 * verifies that no one took the volume over meanwhile.
 */
export class HeldLease {
  private verified: boolean;
  private verifying: Promise<void> | undefined;

  constructor(
    private readonly store: ObjectStore,
    private readonly volume: string,
    readonly epoch: number,
    verified: boolean,
  ) {
    this.verified = verified;
  }

  /** Resolves once the lease is confirmed (at once, unless the volume was opened offline). */
  ready(): Promise<void> {
    if (this.verified) return Promise.resolve();
    this.verifying ??= (async () => {
      const top = await highestEpoch(this.store, this.volume);
      if (top.epoch > this.epoch) throw new Error(await this.fencedBy(top.epoch));
      this.verified = true;
    })().finally(() => {
      this.verifying = undefined;
    });
    return this.verifying;
  }

  /** Undefined while this epoch is the newest; otherwise why this writer is fenced. */
  async check(): Promise<string | undefined> {
    await this.ready();
    if ((await this.store.head(leaseKey(this.volume, this.epoch + 1))) === undefined) return undefined;
    return this.fencedBy(this.epoch + 1);
  }

  private async fencedBy(epoch: number): Promise<string> {
    const holder = asRecord(await readJson(this.store, leaseKey(this.volume, epoch)).catch(() => undefined), epoch);
    return `volume ${this.volume} was taken over by ${describeHolder(holder)}: this daemon (writer epoch ${this.epoch}) is fenced; it uploads nothing more and fails writes`;
  }

  /** Marks the epoch released: the next opener takes the next epoch without a takeover. */
  async release(): Promise<void> {
    await this.store.put(releasedKey(this.volume, this.epoch), new TextEncoder().encode(`${JSON.stringify({ releasedAt: new Date().toISOString() })}\n`));
  }
}
