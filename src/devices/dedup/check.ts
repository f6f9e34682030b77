/**
 * `usbd-tui check` for dedup stores: proves that the committed state is consistent (every map entry refers to a
 * stored block of the right size, refcounts equal references, slots never overlap, every block's content still
 * hashes to its key) and, with `repair`, makes it so: refcounts are corrected, unreferenced blocks dropped, and map
 * entries that point at missing or corrupt blocks are cleared (those logical blocks then read as zeros; the report
 * counts them as lost).
 */
import fs from "node:fs";
import { DeviceError } from "../device.ts";
import { BlockFile } from "./block-file.ts";
import { openLocked } from "../locked-file.ts";
import { Catalog, type BlockRow } from "./catalog.ts";
import { MAP_PAGE_ENTRIES, chunkOf, slotAligned, slotOf, storePaths, unitsOf } from "./layout.ts";

export interface CheckOptions {
  readonly storeDir: string;
  readonly storeName: string;
  readonly repair?: boolean;
  /** Skip reading and hashing every block (much faster on large stores; finds only index and map problems). */
  readonly skipData?: boolean;
  /**
   * Told how far the check is, now and then (every 4096 blocks or 64 map pages): reading blocks, then walking the
   * map. Synchronous, like the check: write progress with a synchronous write.
   */
  readonly onProgress?: (progress: CheckProgress) => void;
}

export interface CheckProgress {
  readonly phase: "blocks" | "map";
  readonly done: number;
  readonly total: number;
}

export interface CheckReport {
  readonly blocks: number;
  /** Non-zero map entries. */
  readonly references: number;
  /** What is wrong, one line each (at most MAX_PROBLEM_LINES; `problemCount` has them all). */
  readonly problems: readonly string[];
  readonly problemCount: number;
  /** Logical blocks whose data could not be kept (cleared by repair, or that a repair would clear). */
  readonly lostBlocks: number;
  readonly repaired: boolean;
}

const MAX_PROBLEM_LINES = 50;

interface Block extends BlockRow {
  /** References counted in the map. */
  counted: number;
  /** Content missing, unreadable, or not matching its hash; or its slot breaks the layout. */
  bad: boolean;
}

class Problems {
  readonly lines: string[] = [];
  count = 0;
  add(line: string): void {
    this.count++;
    if (this.lines.length < MAX_PROBLEM_LINES) this.lines.push(line);
  }
}

/** Checks (and with `repair`, fixes) the store. Throws a user-facing Error when the store cannot be opened at all. */
export function checkDedupStore(options: CheckOptions): CheckReport {
  const paths = storePaths(options.storeDir, options.storeName);
  for (const p of [paths.db, paths.blocks]) {
    if (!fs.existsSync(p)) throw new Error(`check: ${p} does not exist; is --store-dir/--store-name right?`);
  }
  const fd = openLocked(paths.blocks, false, "dedup");
  let catalog: Catalog | undefined;
  let file: BlockFile | undefined;
  try {
    catalog = new Catalog(paths.db, false);
    const settings = catalog.settings();
    if (settings === undefined) throw new Error(`check: ${paths.db} holds no store settings; it is not a usbd-tui dedup store`);
    file = new BlockFile(fd, paths.blocks, settings.blockSize);
    const problems = new Problems();
    const counts = catalog.counts();
    const progress = options.onProgress ?? (() => undefined);
    const blocks = loadBlocks(catalog, file, problems, options.skipData === true, (done) => progress({ phase: "blocks", done, total: counts.blocks }));
    const { references, lost } = countReferences(catalog, blocks, settings.size / settings.blockSize, problems, (done) => progress({ phase: "map", done, total: counts.pages }));
    for (const block of blocks.values()) {
      if (block.bad) continue;
      if (block.counted !== block.refs) {
        problems.add(
          block.counted === 0
            ? `slot ${block.slot}: block with refcount ${block.refs} that nothing refers to (space leak)`
            : `slot ${block.slot}: refcount ${block.refs} but ${block.counted} references`,
        );
      }
    }
    const repaired = options.repair === true && problems.count > 0;
    if (repaired) repair(catalog, blocks, settings.size / settings.blockSize);
    return { blocks: blocks.size, references, problems: problems.lines, problemCount: problems.count, lostBlocks: lost, repaired };
  } finally {
    catalog?.close();
    if (file !== undefined) file.close();
    else fs.closeSync(fd);
  }
}

function loadBlocks(catalog: Catalog, file: BlockFile, problems: Problems, skipData: boolean, progress: (done: number) => void): Map<number, Block> {
  const blocks = new Map<number, Block>();
  const chunkUnits = new Map<number, number>();
  const content = Buffer.allocUnsafe(file.blockSize);
  const hash = Buffer.alloc(32);
  for (const row of catalog.allBlocks()) {
    // Told before the next block, not as the 4096th is added: the end is told once, after the loop.
    if (blocks.size > 0 && blocks.size % 4096 === 0) progress(blocks.size);
    const block: Block = { ...row, counted: 0, bad: false };
    blocks.set(row.slot, block);
    const chunk = chunkOf(row.slot);
    if (!slotAligned(row.slot, row.units) || (chunkUnits.get(chunk) ?? row.units) !== row.units) {
      problems.add(`slot ${row.slot}: a ${row.units}-unit block where the chunk's layout does not allow one`);
      block.bad = true;
      continue;
    }
    chunkUnits.set(chunk, row.units);
    if (row.refs <= 0) problems.add(`slot ${row.slot}: stored with refcount ${row.refs}`);
    if (skipData) continue;
    try {
      file.readBlock(row.slot, row.units, content, 0);
      Bun.SHA256.hash(content, hash);
      if (!hash.equals(row.hash)) {
        problems.add(`slot ${row.slot}: content does not match its SHA-256 (overwritten or torn)`);
        block.bad = true;
      }
    } catch (e) {
      if (!(e instanceof DeviceError)) throw e;
      problems.add(`slot ${row.slot}: ${e.message}`);
      block.bad = true;
    }
  }
  progress(blocks.size);
  return blocks;
}

function countReferences(
  catalog: Catalog,
  blocks: Map<number, Block>,
  logicalBlocks: number,
  problems: Problems,
  progress: (done: number) => void,
): { references: number; lost: number } {
  let references = 0;
  let lost = 0;
  let pages = 0;
  for (const [page, entries] of catalog.allPages()) {
    if (pages > 0 && pages % 64 === 0) progress(pages);
    pages++;
    for (let i = 0; i < MAP_PAGE_ENTRIES; i++) {
      const entry = entries[i]!;
      if (entry === 0) continue;
      const logical = page * MAP_PAGE_ENTRIES + i;
      references++;
      const block = blocks.get(slotOf(entry));
      const why =
        logical >= logicalBlocks
          ? "lies past the end of the device"
          : block === undefined
            ? `refers to slot ${slotOf(entry)}, which holds no block`
            : block.units !== unitsOf(entry)
              ? `refers to slot ${block.slot} as ${unitsOf(entry)} units, but the block there has ${block.units}`
              : block.bad
                ? `refers to the bad block in slot ${block.slot}`
                : undefined;
      if (why === undefined) {
        block!.counted++;
      } else {
        problems.add(`logical block ${logical} ${why}`);
        lost++;
      }
    }
  }
  progress(pages);
  return { references, lost };
}

/** Makes the committed state consistent in one transaction. */
function repair(catalog: Catalog, blocks: Map<number, Block>, logicalBlocks: number): void {
  // Pages are collected first: rewriting rows of the table a query is still walking is not safe in sqlite.
  const changed: [number, Float64Array][] = [];
  for (const [page, entries] of catalog.allPages()) {
    let dirty = false;
    for (let i = 0; i < MAP_PAGE_ENTRIES; i++) {
      const entry = entries[i]!;
      if (entry === 0) continue;
      const block = blocks.get(slotOf(entry));
      if (page * MAP_PAGE_ENTRIES + i >= logicalBlocks || block === undefined || block.bad || block.units !== unitsOf(entry)) {
        entries[i] = 0;
        dirty = true;
      }
    }
    if (dirty) changed.push([page, entries]);
  }
  catalog.transaction(() => {
    for (const [page, entries] of changed) catalog.savePage(page, entries);
    for (const block of blocks.values()) {
      if (block.bad || block.counted === 0) catalog.removeBlock(block.slot);
      else if (block.counted !== block.refs) catalog.setRefs(block.slot, block.counted);
    }
  });
}
