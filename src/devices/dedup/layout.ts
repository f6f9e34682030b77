/**
 * The on-disk shape of a dedup store, shared by the device and `check`.
 *
 * A store is two files in the store directory:
 * - `<name>.dedup.blocks`: the unique blocks. The file is cut into chunks of 256 logical blocks; each chunk holds
 *   slots of one size, 1 to 8 eighths of a block (a "unit" is blockSize / 8). A block that lz4 shrinks goes into the
 *   smallest slot it fits, as a u16 little-endian length followed by the lz4 frame; any other block is stored raw
 *   in an 8-unit slot. So a compressed block wastes less than one unit, and freed slots are reused by blocks of the
 *   same slot size.
 * - `<name>.dedup.db`: bun:sqlite in WAL mode, the one place the store commits: the settings, every stored block
 *   (slot, refcount, SHA-256 of its content) and the logical map, in pages of 1024 entries.
 *
 * A map entry is 0 for a block that reads as zeros (nothing stored), else `slot * 16 + units` where `slot` is the
 * block's first unit in the blocks file: a read needs the map entry alone.
 */

/** Version of the layout written into `meta`; a store of another version is refused, not guessed at. */
export const FORMAT_VERSION = 1;

/** Units per block: slot sizes are 1..UNITS_PER_BLOCK units; a block stored raw takes all of them. */
export const UNITS_PER_BLOCK = 8;
/** Blocks per chunk of the blocks file. */
export const CHUNK_BLOCKS = 256;
export const CHUNK_UNITS = CHUNK_BLOCKS * UNITS_PER_BLOCK;
/** Map entries per page row in sqlite (8 KiB of Float64). */
export const MAP_PAGE_ENTRIES = 1024;
/** Bytes of the length prefix of a compressed slot. */
export const COMPRESSED_HEADER = 2;

export type DedupCompression = "lz4" | "none";
export const DEDUP_COMPRESSIONS: readonly DedupCompression[] = ["lz4", "none"];

export function isDedupCompression(name: string): name is DedupCompression {
  return (DEDUP_COMPRESSIONS as readonly string[]).includes(name);
}

export interface StorePaths {
  readonly db: string;
  readonly blocks: string;
}

export function storePaths(dir: string, name: string): StorePaths {
  return { db: `${dir}/${name}.dedup.db`, blocks: `${dir}/${name}.dedup.blocks` };
}

/** Map entry for a block stored in `units` units at `slot`. */
export function entryOf(slot: number, units: number): number {
  return slot * 16 + units;
}

export function slotOf(entry: number): number {
  return Math.floor(entry / 16);
}

export function unitsOf(entry: number): number {
  return entry % 16;
}

/** The chunk a slot lies in. */
export function chunkOf(slot: number): number {
  return Math.floor(slot / CHUNK_UNITS);
}

/** Where a slot of `units` units may start inside its chunk: a chunk holds slots of one size, packed from its start. */
export function slotAligned(slot: number, units: number): boolean {
  const inChunk = slot - chunkOf(slot) * CHUNK_UNITS;
  return units >= 1 && units <= UNITS_PER_BLOCK && inChunk % units === 0 && inChunk + units <= CHUNK_UNITS;
}
