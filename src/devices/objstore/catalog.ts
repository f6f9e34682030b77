/**
 * The objstore cache's catalog (bun:sqlite, WAL): the volume map's pages, one row per log object the volume knows
 * (open, sealed and waiting for upload, or stored), the snapshots GC must keep, and settings. A commit only ever
 * names local bytes that were fdatasynced before it (the log writer's rule), so a crash at any point reopens to the
 * last commit: the state at the last FLUSH or seal.
 */
import type { Database, Statement } from "bun:sqlite";
import fs from "node:fs";
import { CatalogDatabase } from "../sqlite-catalog.ts";

export const CATALOG_FORMAT = 2;

/** What the catalog remembers about one log object. */
export interface ObjectRow {
  readonly seq: number;
  readonly epoch: number;
  /** 0 open (receiving writes), 1 sealed (complete, waiting for upload), 2 stored (in the object store). */
  readonly state: number;
  /** Cache slot holding (some of) its data area, or null. */
  readonly slot: number | null;
  readonly dataLength: number;
  /** Bytes of its data area the map still points at. */
  readonly live: number;
  /** Stored objects: where its chunks are (salt, data start, chunk size, sealed chunk lengths). */
  readonly layout: Uint8Array | null;
  /** Sealed objects: its extent table, until it is stored. */
  readonly extents: Uint8Array | null;
  /** The open object: the map pages it wrote to. */
  readonly touched: Uint8Array | null;
  /** Stored objects with a slot: which chunks the slot holds (a bitmap). */
  readonly present: Uint8Array | null;
  /** 1: its last write continues in the next object. */
  readonly flags: number;
}

export interface SnapshotRow {
  readonly name: string;
  readonly seq: number;
  readonly epoch: number;
  /** The log objects the snapshot's checkpoint refers to (u64 little-endian each). */
  readonly refs: Uint8Array;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pages(page INTEGER PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS objects(seq INTEGER PRIMARY KEY, epoch INTEGER NOT NULL, state INTEGER NOT NULL, slot INTEGER UNIQUE,
  data_length INTEGER NOT NULL, live INTEGER NOT NULL, layout BLOB, extents BLOB, touched BLOB, present BLOB, flags INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS snapshots(name TEXT PRIMARY KEY, seq INTEGER NOT NULL, epoch INTEGER NOT NULL, refs BLOB NOT NULL) WITHOUT ROWID;
`;

interface RawObject {
  seq: number;
  epoch: number;
  state: number;
  slot: number | null;
  data_length: number;
  live: number;
  layout: Uint8Array | null;
  extents: Uint8Array | null;
  touched: Uint8Array | null;
  present: Uint8Array | null;
  flags: number;
}

/** A catalog left by the segment format of earlier versions (or anything else that is not ours). */
export class CatalogFormatError extends Error {}

export class ObjstoreCatalog {
  private readonly connection: CatalogDatabase;
  private readonly db: Database;
  private readonly putPage: Statement<unknown, [number, Uint8Array]>;
  private readonly dropPage: Statement<unknown, [number]>;
  private readonly getPage: Statement<{ data: Uint8Array }, [number]>;
  private readonly putObject: Statement<unknown, [number, number, number, number | null, number, number, Uint8Array | null, Uint8Array | null, Uint8Array | null, Uint8Array | null, number]>;
  private readonly dropObject: Statement<unknown, [number]>;

  /** Opens (creating when `create`, mode 0600) the catalog at `path`. */
  constructor(readonly path: string, create: boolean) {
    if (create) fs.writeFileSync(path, "", { mode: 0o600, flag: "wx" });
    this.connection = new CatalogDatabase(path, false);
    this.db = this.connection.db;
    // NORMAL: a commit reaches the WAL (surviving a killed process) without an fsync; commitDurably() syncs it.
    this.db.exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;");
    const old = this.db.query<{ n: number }, []>("SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' AND name = 'segments'").get();
    if ((old?.n ?? 0) > 0) {
      this.connection.close();
      throw new CatalogFormatError(
        `${path} is the cache catalog of the segment format of an earlier usbd-tui, which this version does not read; ` +
          `upload what it holds with that version, then delete it and the .objstore.cache file beside it`,
      );
    }
    this.db.exec(SCHEMA);
    const format = this.meta("format");
    if (format === undefined) this.setMeta("format", CATALOG_FORMAT);
    else if (format !== CATALOG_FORMAT) {
      this.connection.close();
      throw new CatalogFormatError(`${path} has catalog format ${String(format)}; this usbd-tui reads format ${CATALOG_FORMAT}`);
    }
    this.putPage = this.connection.track(this.db.prepare("INSERT OR REPLACE INTO pages(page, data) VALUES (?, ?)"));
    this.dropPage = this.connection.track(this.db.prepare("DELETE FROM pages WHERE page = ?"));
    this.getPage = this.connection.track(this.db.prepare("SELECT data FROM pages WHERE page = ?"));
    this.putObject = this.connection.track(this.db.prepare(
      "INSERT OR REPLACE INTO objects(seq, epoch, state, slot, data_length, live, layout, extents, touched, present, flags) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    ));
    this.dropObject = this.connection.track(this.db.prepare("DELETE FROM objects WHERE seq = ?"));
  }

  meta(key: string): string | number | undefined {
    const row = this.db.query<{ value: string | number }, [string]>("SELECT value FROM meta WHERE key = ?").get(key);
    return row?.value ?? undefined;
  }

  setMeta(key: string, value: string | number): void {
    this.db.query("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)").run(key, value);
  }

  deleteMeta(key: string): void {
    this.db.query("DELETE FROM meta WHERE key = ?").run(key);
  }

  page(index: number): Uint8Array | undefined {
    return this.getPage.get(index)?.data ?? undefined;
  }

  pageIndexes(): number[] {
    return this.db
      .query<{ page: number }, []>("SELECT page FROM pages ORDER BY page")
      .all()
      .map((r) => r.page);
  }

  savePage(index: number, bytes: Uint8Array): void {
    if (bytes.length === 0) this.dropPage.run(index);
    else this.putPage.run(index, bytes);
  }

  objects(): ObjectRow[] {
    return this.db
      .query<RawObject, []>("SELECT seq, epoch, state, slot, data_length, live, layout, extents, touched, present, flags FROM objects ORDER BY seq")
      .all()
      .map((r) => ({
        seq: r.seq,
        epoch: r.epoch,
        state: r.state,
        slot: r.slot,
        dataLength: r.data_length,
        live: r.live,
        layout: r.layout,
        extents: r.extents,
        touched: r.touched,
        present: r.present,
        flags: r.flags,
      }));
  }

  saveObject(row: ObjectRow): void {
    this.putObject.run(row.seq, row.epoch, row.state, row.slot, row.dataLength, row.live, row.layout, row.extents, row.touched, row.present, row.flags);
  }

  deleteObject(seq: number): void {
    this.dropObject.run(seq);
  }

  snapshots(): SnapshotRow[] {
    return this.db.query<SnapshotRow, []>("SELECT name, seq, epoch, refs FROM snapshots ORDER BY name").all();
  }

  saveSnapshot(row: SnapshotRow): void {
    this.db.query("INSERT OR REPLACE INTO snapshots(name, seq, epoch, refs) VALUES (?, ?, ?, ?)").run(row.name, row.seq, row.epoch, row.refs);
  }

  deleteSnapshot(name: string): void {
    this.db.query("DELETE FROM snapshots WHERE name = ?").run(name);
  }

  /** Runs `work` in one transaction (a commit with synchronous=NORMAL: it survives a killed process). */
  transaction(work: () => void): void {
    this.db.transaction(work)();
  }

  /** Like `transaction`, and the commit is fsynced (with every earlier one). */
  durably(work: () => void): void {
    this.db.exec("PRAGMA synchronous = FULL");
    try {
      this.db.transaction(work)();
    } finally {
      this.db.exec("PRAGMA synchronous = NORMAL");
    }
  }

  /** Empties everything but the settings (a cache of another volume, or one that must be rebuilt from the store). */
  clear(): void {
    this.db.transaction(() => {
      this.db.exec("DELETE FROM pages; DELETE FROM objects; DELETE FROM snapshots; DELETE FROM meta WHERE key <> 'format'");
    })();
  }

  close(): void {
    this.connection.close();
  }
}
