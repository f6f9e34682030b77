/**
 * The objstore cache's catalog (bun:sqlite, WAL): a copy of the volume's manifest and one row per segment the
 * cache knows about (cached, dirty, or with a known remote generation). Rows are written as segments change state,
 * so a SIGKILL loses nothing the catalog promised; `commitDurably` adds the fsync that FLUSH and slot reuse need.
 */
import { Database, type Statement } from "bun:sqlite";
import fs from "node:fs";

/** What the catalog remembers about one segment. */
export interface SegmentRow {
  readonly id: number;
  /** The cache slot holding the segment's bytes, or null when it is not cached. */
  readonly slot: number | null;
  /** The cached bytes hold writes the remote object does not have yet. */
  readonly dirty: boolean;
  /** Generation of the newest object this cache uploaded or downloaded for the segment (0: none seen). */
  readonly generation: number;
  /** ETag of the remote object the clean cached bytes equal, or null when there is no remote object. */
  readonly etag: string | null;
}

const FORMAT = 1;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS segments(id INTEGER PRIMARY KEY, slot INTEGER UNIQUE, dirty INTEGER NOT NULL, generation INTEGER NOT NULL, etag TEXT);
`;

interface RawRow {
  id: number;
  slot: number | null;
  dirty: number;
  generation: number;
  etag: string | null;
}

export class ObjstoreCatalog {
  private readonly db: Database;
  private readonly put: Statement<unknown, [number, number | null, number, number, string | null]>;
  private readonly remove: Statement<unknown, [number]>;

  /** Opens (creating when `create`, mode 0600) the catalog at `path`. */
  constructor(readonly path: string, create: boolean) {
    if (create) fs.writeFileSync(path, "", { mode: 0o600, flag: "wx" });
    this.db = new Database(path, { readwrite: true, strict: true });
    // NORMAL: a commit reaches the WAL (surviving a killed process) without an fsync; commitDurably() syncs it.
    this.db.exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;");
    this.db.exec(SCHEMA);
    const format = this.meta("format");
    if (format === undefined) this.setMeta("format", FORMAT);
    else if (format !== FORMAT) throw new Error(`${path} has catalog format ${String(format)}; this usbd-tui reads format ${FORMAT}`);
    this.put = this.db.prepare("INSERT OR REPLACE INTO segments(id, slot, dirty, generation, etag) VALUES (?, ?, ?, ?, ?)");
    this.remove = this.db.prepare("DELETE FROM segments WHERE id = ?");
  }

  meta(key: string): string | number | undefined {
    const row = this.db.query<{ value: string | number }, [string]>("SELECT value FROM meta WHERE key = ?").get(key);
    return row?.value ?? undefined;
  }

  setMeta(key: string, value: string | number): void {
    this.db.query("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)").run(key, value);
  }

  /** Every segment row, in id order. */
  rows(): SegmentRow[] {
    return this.db
      .query<RawRow, []>("SELECT id, slot, dirty, generation, etag FROM segments ORDER BY id")
      .all()
      .map((r) => ({ id: r.id, slot: r.slot, dirty: r.dirty !== 0, generation: r.generation, etag: r.etag }));
  }

  /** Records a segment's state; a row that says nothing (not cached, clean, never seen remotely) is deleted. */
  save(row: SegmentRow): void {
    if (row.slot === null && !row.dirty && row.generation === 0 && row.etag === null) this.remove.run(row.id);
    else this.put.run(row.id, row.slot, row.dirty ? 1 : 0, row.generation, row.etag);
  }

  /** Saves several rows in one transaction. */
  saveAll(rows: Iterable<SegmentRow>): void {
    this.db.transaction(() => {
      for (const row of rows) this.save(row);
    })();
  }

  /**
   * Makes every commit so far durable: one transaction written with synchronous=FULL fsyncs the WAL, and with it
   * the earlier NORMAL commits before it.
   */
  commitDurably(): void {
    this.db.exec("PRAGMA synchronous = FULL");
    try {
      this.db.transaction(() => this.setMeta("last_durable_commit", Date.now()))();
    } finally {
      this.db.exec("PRAGMA synchronous = NORMAL");
    }
  }

  close(): void {
    this.db.close();
  }
}
