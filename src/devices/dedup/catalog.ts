/**
 * The dedup store's sqlite side: schema, settings, and the statements the device and `check` use. Nothing here
 * decides policy; it reads and writes rows.
 */
import type { Database, Statement } from "bun:sqlite";
import fs from "node:fs";
import { CatalogDatabase } from "../sqlite-catalog.ts";
import { FORMAT_VERSION, MAP_PAGE_ENTRIES } from "./layout.ts";

export interface StoreSettings {
  readonly size: number;
  readonly blockSize: number;
}

export interface BlockRow {
  readonly slot: number;
  readonly units: number;
  readonly refs: number;
  readonly hash: Uint8Array;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blocks(slot INTEGER PRIMARY KEY, units INTEGER NOT NULL, refs INTEGER NOT NULL, hash BLOB NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS map(page INTEGER PRIMARY KEY, entries BLOB NOT NULL);
`;

export class Catalog {
  private readonly connection: CatalogDatabase;
  readonly db: Database;
  /** Files a read-only open created and its close removes (undefined for a writable open). */
  private readonly readOnlyLeftovers: readonly string[] | undefined;
  private readonly getPage: Statement<{ entries: Uint8Array }, [number]>;
  private readonly putPage: Statement<unknown, [number, Uint8Array]>;
  private readonly deletePage: Statement<unknown, [number]>;
  private readonly blockBySlot: Statement<BlockRow, [number]>;
  private readonly blockByHash: Statement<BlockRow, [Uint8Array]>;
  private readonly insertBlock: Statement<unknown, [number, number, number, Uint8Array]>;
  private readonly updateRefs: Statement<unknown, [number, number]>;
  private readonly deleteBlock: Statement<unknown, [number]>;

  /**
   * Opens (creating when `create`) the database at `path`. `cacheBytes` sizes sqlite's page cache: inserts into the
   * hash index touch random pages, and measured 10-12 us per new block with the 2 MB default against 2.5-5 us
   * with 64 MB.
   */
  constructor(path: string, create: boolean, cacheBytes = 8 << 20, readOnly = false) {
    // Private like the blocks file: sqlite gives its -wal and -shm files the database file's mode.
    if (create) fs.writeFileSync(path, "", { mode: 0o600, flag: "wx" });
    // A read-only open of a WAL database makes empty -wal and -shm files when there are none; close() removes them.
    this.readOnlyLeftovers = readOnly ? [`${path}-wal`, `${path}-shm`].filter((p) => !fs.existsSync(p)) : undefined;
    this.connection = new CatalogDatabase(path, readOnly);
    this.db = this.connection.db;
    this.db.exec(`PRAGMA cache_size = -${Math.max(1024, Math.floor(cacheBytes / 1024))}`);
    if (!readOnly) {
      // WAL: a commit is one fsync of the log; FULL: that fsync happens at every commit, which is what FLUSH promises.
      this.db.exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = OFF;");
      this.db.exec(SCHEMA);
    }
    this.getPage = this.connection.track(this.db.prepare("SELECT entries FROM map WHERE page = ?"));
    this.putPage = this.connection.track(this.db.prepare("INSERT OR REPLACE INTO map(page, entries) VALUES (?, ?)"));
    this.deletePage = this.connection.track(this.db.prepare("DELETE FROM map WHERE page = ?"));
    this.blockBySlot = this.connection.track(this.db.prepare("SELECT slot, units, refs, hash FROM blocks WHERE slot = ?"));
    this.blockByHash = this.connection.track(this.db.prepare("SELECT slot, units, refs, hash FROM blocks WHERE hash = ?"));
    this.insertBlock = this.connection.track(this.db.prepare("INSERT INTO blocks(slot, units, refs, hash) VALUES (?, ?, ?, ?)"));
    this.updateRefs = this.connection.track(this.db.prepare("UPDATE blocks SET refs = ? WHERE slot = ?"));
    this.deleteBlock = this.connection.track(this.db.prepare("DELETE FROM blocks WHERE slot = ?"));
  }

  /** The stored settings, or undefined for a store that has none yet. Throws on a store of another format. */
  settings(): StoreSettings | undefined {
    const rows = this.db.query<{ key: string; value: number }, []>("SELECT key, value FROM meta").all();
    if (rows.length === 0) return undefined;
    const meta = new Map(rows.map((r) => [r.key, r.value]));
    const format = meta.get("format");
    if (format !== FORMAT_VERSION) {
      throw new Error(`the store's format is ${String(format)}, this usbd-tui reads format ${FORMAT_VERSION}`);
    }
    const size = meta.get("size");
    const blockSize = meta.get("block_size");
    if (typeof size !== "number" || typeof blockSize !== "number") throw new Error("the store's settings are incomplete (size, block_size)");
    return { size, blockSize };
  }

  writeSettings(settings: StoreSettings): void {
    const put = this.db.query<unknown, [string, number]>("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)");
    this.db.transaction(() => {
      put.run("format", FORMAT_VERSION);
      put.run("size", settings.size);
      put.run("block_size", settings.blockSize);
    })();
  }

  /** A map page as a fresh array, or undefined when every entry in it is zero (no row). */
  page(index: number): Float64Array | undefined {
    const row = this.getPage.get(index);
    if (row === null) return undefined;
    const bytes = row.entries;
    if (bytes.length !== MAP_PAGE_ENTRIES * 8) throw new Error(`map page ${index} has ${bytes.length} bytes, not ${MAP_PAGE_ENTRIES * 8}`);
    const out = new Float64Array(MAP_PAGE_ENTRIES);
    new Uint8Array(out.buffer).set(bytes);
    return out;
  }

  savePage(index: number, entries: Float64Array): void {
    if (entries.every((e) => e === 0)) this.deletePage.run(index);
    else this.putPage.run(index, new Uint8Array(entries.buffer, entries.byteOffset, entries.byteLength));
  }

  block(slot: number): BlockRow | undefined {
    return this.blockBySlot.get(slot) ?? undefined;
  }

  blockWithHash(hash: Uint8Array): BlockRow | undefined {
    return this.blockByHash.get(hash) ?? undefined;
  }

  /** Adds the row of a block that has none yet. */
  addBlock(row: BlockRow): void {
    this.insertBlock.run(row.slot, row.units, row.refs, row.hash);
  }

  /** Changes an existing block's refcount (cheap: the hash index is not touched). */
  setRefs(slot: number, refs: number): void {
    this.updateRefs.run(refs, slot);
  }

  removeBlock(slot: number): void {
    this.deleteBlock.run(slot);
  }

  /** The index of every map page that has a row. */
  pageIndexes(): number[] {
    return this.db.query<{ page: number }, []>("SELECT page FROM map").all().map((r) => r.page);
  }

  /** Every block's slot and size, for rebuilding the allocator and the totals at open. */
  *slots(): Generator<readonly [number, number, number]> {
    for (const row of this.db.query<{ slot: number; units: number; refs: number }, []>("SELECT slot, units, refs FROM blocks").iterate()) {
      yield [row.slot, row.units, row.refs];
    }
  }

  /** Every stored block's hash (to build the hash filter). */
  *hashes(): Generator<Uint8Array> {
    for (const row of this.db.query<{ hash: Uint8Array }, []>("SELECT hash FROM blocks").iterate()) yield row.hash;
  }

  /** How many block rows and map pages there are (for `check`'s progress). */
  counts(): { readonly blocks: number; readonly pages: number } {
    const one = (sql: string) => this.db.query<{ n: number }, []>(sql).get()?.n ?? 0;
    return { blocks: one("SELECT count(*) AS n FROM blocks"), pages: one("SELECT count(*) AS n FROM map") };
  }

  /** Every block row, in slot order (for `check`). */
  *allBlocks(): Generator<BlockRow> {
    yield* this.db.query<BlockRow, []>("SELECT slot, units, refs, hash FROM blocks ORDER BY slot").iterate();
  }

  /** Every map page that has a row, in page order (for `check`). */
  *allPages(): Generator<readonly [number, Float64Array]> {
    for (const row of this.db.query<{ page: number }, []>("SELECT page FROM map ORDER BY page").iterate()) {
      yield [row.page, this.page(row.page)!];
    }
  }

  /** Runs `work` as one transaction: all of it is committed (durably, with synchronous=FULL) or none. */
  transaction(work: () => void): void {
    this.db.transaction(work)();
  }

  close(): void {
    this.connection.close();
    // Only a read-only open sets this, under the store's shared lock: no writer can have used these files since.
    for (const leftover of this.readOnlyLeftovers ?? []) {
      if (fs.existsSync(leftover) && (leftover.endsWith("-shm") || fs.statSync(leftover).size === 0)) fs.rmSync(leftover);
    }
  }
}
