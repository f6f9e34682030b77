/**
 * A catalog's close() really closes its sqlite connection. bun:sqlite leaves a connection with unfinalized prepared
 * statements open as a zombie until garbage collection, and a zombie that finally went while the next daemon opened
 * the catalog made that open fail with "database is locked" (seen in CI's objstore crash soak). sqlite deletes the
 * WAL file when the last connection closes, so a WAL left after close() means the connection is still open.
 */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Catalog } from "../../src/devices/dedup/catalog.ts";
import { MAP_PAGE_ENTRIES } from "../../src/devices/dedup/layout.ts";
import { ObjstoreCatalog } from "../../src/devices/objstore/catalog.ts";

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "usbd-catalog-close-"));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

describe("catalog close", () => {
  test("objstore: after use of every kind of statement, close() leaves no WAL and a second open works at once", () => {
    const file = path.join(dir, "cache.db");
    const catalog = new ObjstoreCatalog(file, true);
    catalog.savePage(3, new Uint8Array([1, 2, 3]));
    expect(catalog.page(3)).toEqual(new Uint8Array([1, 2, 3]));
    catalog.setMeta("name", "vol");
    catalog.close();
    expect(fs.existsSync(`${file}-wal`)).toBe(false);
    const again = new ObjstoreCatalog(file, false);
    expect(again.page(3)).toEqual(new Uint8Array([1, 2, 3]));
    again.close();
    expect(fs.existsSync(`${file}-wal`)).toBe(false);
  });

  test("dedup: after use of its prepared statements, close() leaves no WAL and a second open works at once", () => {
    const file = path.join(dir, "store.db");
    const catalog = new Catalog(file, true);
    catalog.writeSettings({ size: 1 << 20, blockSize: 4096 });
    const entries = new Float64Array(MAP_PAGE_ENTRIES).fill(7);
    catalog.savePage(0, entries);
    catalog.addBlock({ slot: 1, units: 1, refs: 1, hash: new Uint8Array(32).fill(9) });
    expect(catalog.block(1)?.refs).toBe(1);
    catalog.close();
    expect(fs.existsSync(`${file}-wal`)).toBe(false);
    const again = new Catalog(file, false);
    expect(again.page(0)).toEqual(entries);
    again.close();
    expect(fs.existsSync(`${file}-wal`)).toBe(false);
  });
});
