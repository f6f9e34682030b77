/**
 * `usbd-tui snapshot create|list|delete [NAME] --store-dir DIR --store-name VOL --objstore-kind ... --objstore-cfg ...`:
 * snapshots of an objstore volume. `create` on a stopped volume opens it as its writer, records a checkpoint of
 * everything written and names it; on a volume a daemon on this machine serves (under the export name, by default
 * the store name) it asks that daemon through its control socket, which does the same without stopping; `list` and
 * `delete` need only the store. A snapshot is opened read-only with
 * `--objstore-snapshot NAME`, or cloned into a new volume with `--objstore-clone-of VOL@NAME`.
 * Exit codes: 0 done, 1 the store or volume failed, 2 a usage error (a bad name, a name in use, a snapshot a clone
 * needs, the volume in use).
 */
import path from "node:path";
import { openObjstoreDevice, LeaseHeldError, SnapshotError } from "../devices/objstore/index.ts";
import { checkSnapshotName, deleteSnapshot, listSnapshots } from "../devices/objstore/snapshots.ts";
import { KeyError } from "../devices/objstore/codec/keys.ts";
import { ObjectStoreConfigError, openObjectStore, parseObjectStoreConfig } from "../devices/objstore/store/config.ts";
import { StoreLockedError } from "../devices/locked-file.ts";
import { ControlClient } from "../app/control/client.ts";
import { findServingDaemon } from "../app/control/find-device.ts";
import { parseFlags, UsageError, type CliOptions } from "./flags.ts";

export interface SnapshotIo {
  readonly out: (line: string) => void;
  readonly err: (line: string) => void;
}

const USAGE = "usage: usbd-tui snapshot create|list|delete [NAME] --store-dir DIR --store-name VOLUME --objstore-kind KIND --objstore-cfg CFG [--objstore-aeskey SPEC]";

/** Runs `usbd-tui snapshot ...` (argv after the word "snapshot"); returns the exit code. */
export async function runSnapshot(argv: readonly string[], io: SnapshotIo): Promise<number> {
  const [action, ...rest] = argv;
  const named = action === "create" || action === "delete";
  const name = named ? rest[0] : undefined;
  let options: CliOptions;
  try {
    if (action !== "create" && action !== "delete" && action !== "list") throw new UsageError(`snapshot takes create, list or delete, not ${JSON.stringify(action ?? "")}; ${USAGE}`);
    if (named && (name === undefined || name.startsWith("-"))) throw new UsageError(`snapshot ${action} needs a NAME; ${USAGE}`);
    options = parseFlags(named ? rest.slice(1) : rest);
    if (options.devType !== "mem" && options.devType !== "objstore") throw new UsageError("snapshots are of objstore volumes: --dev-type, when given, must be objstore");
    if (name !== undefined) checkSnapshotName(name);
  } catch (e) {
    if (e instanceof UsageError || e instanceof SnapshotError) {
      io.err(`usbd-tui: ${e.message}`);
      return 2;
    }
    throw e;
  }
  const o = options.objstore;
  const volume = options.storeName;
  try {
    if (action === "create") {
      const dev = await openObjstoreDevice({
        storeDir: options.storeDir,
        storeName: volume,
        kind: o.kind,
        ...(o.config === undefined ? {} : { config: o.config }),
        ...(o.aesKey === undefined ? {} : { aesKey: o.aesKey }),
      });
      try {
        const record = await dev.createSnapshot(name!);
        io.out(options.json ? JSON.stringify({ type: "snapshot", action, ...record }) : `snapshot ${volume}@${record.name} created (checkpoint ${record.seq}, ${record.createdAt})`);
      } finally {
        await dev.close();
      }
      return 0;
    }
    const store = openObjectStore(o.kind, parseObjectStoreConfig(o.config), { localPath: path.join(options.storeDir, "objects") });
    try {
      await store.prepare();
      if (action === "delete") {
        await deleteSnapshot(store, volume, name!);
        io.out(options.json ? JSON.stringify({ type: "snapshot", action, volume, name }) : `snapshot ${volume}@${name} deleted; its data goes at the volume's next checkpoint`);
      } else {
        const list = await listSnapshots(store, volume);
        if (options.json) for (const s of list) io.out(JSON.stringify({ type: "snapshot", ...s }));
        else if (list.length === 0) io.out(`volume ${volume} has no snapshots`);
        else for (const s of list) io.out(`${s.name}\t${s.createdAt}\tcheckpoint ${s.seq}`);
      }
    } finally {
      store.close();
    }
    return 0;
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e);
    if ((e instanceof LeaseHeldError || e instanceof StoreLockedError) && action === "create") return await createThroughDaemon(options, name!, message, io);
    io.err(`usbd-tui: ${message}`);
    return e instanceof SnapshotError || e instanceof ObjectStoreConfigError || e instanceof KeyError ? 2 : 1;
  }
}

/** `create` on a volume a daemon holds: through the daemon on this machine that serves it, if there is one. */
async function createThroughDaemon(options: CliOptions, name: string, busy: string, io: SnapshotIo): Promise<number> {
  const daemon = await findServingDaemon(options.exportName, "objstore");
  if (daemon === undefined) {
    io.err(`usbd-tui: ${busy}. No daemon on this machine serves it as export "${options.exportName}": stop the daemon that holds it, or pass --export-name (or run \`usbd-tui ctl --control PATH snapshot DEVICE ${name}\` against it)`);
    return 2;
  }
  const client = await ControlClient.connect(daemon.control);
  try {
    const r = await client.request({ command: "create-snapshot", device: options.exportName, name });
    io.out(options.json ? JSON.stringify({ type: "snapshot", action: "create", volume: options.storeName, name: r.name, createdAt: r.createdAt, daemon: daemon.pid }) : `snapshot ${options.storeName}@${r.name} created by the serving daemon (pid ${daemon.pid}, ${r.createdAt})`);
    return 0;
  } catch (error) {
    io.err(`usbd-tui: the serving daemon (pid ${daemon.pid}) refused the snapshot: ${error instanceof Error ? error.message : String(error)}`);
    return error instanceof Error && /already has a snapshot/.test(error.message) ? 2 : 1;
  } finally {
    client.close();
  }
}
