/**
 * bench/dedup-choices.ts - the measurements behind two design choices of the dedup device (docs/ARCHITECTURE.md):
 * which hash (SHA-256 or BLAKE2b-256 through Bun's native hasher), and where the logical map lives (page rows in
 * bun:sqlite, a flat file beside it, or one sqlite row per block). Single-threaded, in-process; run on a quiet
 * machine: `node_modules/.bin/bun bench/dedup-choices.ts`.
 */
import { Database } from "bun:sqlite";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const BLOCK = 4096;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "usbd-dedup-choices-"));

function rate(label: string, count: number, unit: string, work: () => void): void {
  const start = performance.now();
  work();
  const seconds = (performance.now() - start) / 1000;
  console.log(`${label.padEnd(52)} ${(count / seconds).toFixed(0).padStart(12)} ${unit}/s`);
}

function hashes(): void {
  const blocks = Array.from({ length: 256 }, () => crypto.getRandomValues(new Uint8Array(BLOCK)));
  const out = Buffer.alloc(32);
  const n = 100_000;
  const mb = (n * BLOCK) / 1e6;
  rate("SHA-256 of 4 KiB blocks (Bun.SHA256.hash, MB)", mb, "MB", () => {
    for (let i = 0; i < n; i++) Bun.SHA256.hash(blocks[i & 255]!, out);
  });
  rate("BLAKE2b-256 of 4 KiB blocks (CryptoHasher, MB)", mb, "MB", () => {
    for (let i = 0; i < n; i++) Bun.CryptoHasher.hash("blake2b256", blocks[i & 255]!);
  });
}

function maps(): void {
  const pages = 4096;
  const entries = new Float64Array(1024).fill(8);
  const db = new Database(path.join(dir, "map.db"), { create: true, strict: true });
  db.exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;");
  db.exec("CREATE TABLE map(page INTEGER PRIMARY KEY, entries BLOB NOT NULL); CREATE TABLE rows(block INTEGER PRIMARY KEY, entry INTEGER NOT NULL)");
  const put = db.prepare<unknown, [number, Uint8Array]>("INSERT OR REPLACE INTO map VALUES (?, ?)");
  const get = db.prepare<{ entries: Uint8Array }, [number]>("SELECT entries FROM map WHERE page = ?");
  const bytes = new Uint8Array(entries.buffer);
  rate("sqlite page rows: write 8 KiB pages in one commit", pages, "pages", () => db.transaction(() => { for (let i = 0; i < pages; i++) put.run(i, bytes); })());
  rate("sqlite page rows: load a page", pages, "pages", () => {
    for (let i = 0; i < pages; i++) get.get(i);
  });
  const fd = fs.openSync(path.join(dir, "map.flat"), "w+");
  const page = Buffer.alloc(8192);
  rate("flat file: write 8 KiB pages, then fdatasync", pages, "pages", () => {
    for (let i = 0; i < pages; i++) fs.writeSync(fd, page, 0, page.length, i * page.length);
    fs.fdatasyncSync(fd);
  });
  rate("flat file: load a page (pread)", pages, "pages", () => {
    for (let i = 0; i < pages; i++) fs.readSync(fd, page, 0, page.length, i * page.length);
  });
  fs.closeSync(fd);
  const rows = 200_000;
  const insert = db.prepare<unknown, [number, number]>("INSERT OR REPLACE INTO rows VALUES (?, ?)");
  const lookup = db.prepare<{ entry: number }, [number]>("SELECT entry FROM rows WHERE block = ?");
  rate("sqlite row per block: write in one commit", rows, "blocks", () => db.transaction(() => { for (let i = 0; i < rows; i++) insert.run(i, i * 16 + 8); })());
  rate("sqlite row per block: look one up", rows, "blocks", () => {
    for (let i = 0; i < rows; i++) lookup.get(i);
  });
  const cached = new Map<number, Float64Array>([[0, entries]]);
  rate("cached page in memory: look a block up", 10_000_000, "blocks", () => {
    let sum = 0;
    for (let i = 0; i < 10_000_000; i++) sum += cached.get(0)![i & 1023]!;
    if (sum < 0) console.log(sum);
  });
  db.close();
}

try {
  hashes();
  maps();
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}
