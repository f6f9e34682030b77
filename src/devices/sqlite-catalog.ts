/**
 * Opening and closing the sqlite files of the dedup and objstore devices so that a close really closes.
 *
 * bun:sqlite's close() is sqlite3_close_v2: while a prepared statement is unfinalized the connection stays open as a
 * "zombie" until the garbage collector finalizes the statement. The zombie keeps the WAL, and when it finally goes
 * it checkpoints under an exclusive lock at a time nobody chose; a daemon opening the same catalog then (the next
 * open after a detach, a reopen after a crash) got SQLITE_BUSY "database is locked". So each catalog registers its
 * prepared statements here and they are finalized before the close. (Statements from db.query() are bun's own cache,
 * which its close() finalizes; a throwaway db.prepare() would be a zombie-maker, so there are none.)
 */
import { Database } from "bun:sqlite";

/**
 * How long a statement waits for another connection's lock before SQLITE_BUSY. The file lock beside each catalog
 * already keeps a second daemon out; what is left are short holders, such as a read-only `check` or a peer's
 * checkpoint as it closes.
 */
export const CATALOG_BUSY_TIMEOUT_MS = 5_000;

export class CatalogDatabase {
  readonly db: Database;
  private readonly statements: { finalize(): void }[] = [];

  constructor(path: string, readOnly: boolean) {
    this.db = new Database(path, readOnly ? { readonly: true, strict: true } : { readwrite: true, strict: true });
    this.db.exec(`PRAGMA busy_timeout = ${CATALOG_BUSY_TIMEOUT_MS}`);
  }

  /** Registers a statement prepared on `db` for close() to finalize; returns it. */
  track<S extends { finalize(): void }>(statement: S): S {
    this.statements.push(statement);
    return statement;
  }

  /** Finalizes every statement track() was given, then closes: nothing of the connection outlives this call. */
  close(): void {
    for (const statement of this.statements.splice(0)) statement.finalize();
    this.db.close();
  }
}
