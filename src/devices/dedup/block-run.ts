/**
 * Storing a run of whole blocks (the aligned middle of a write) in three steps, so that new blocks reach the file
 * in as few pwrites as possible: one syscall per 4 KiB block was over half the cost of writing new data.
 *
 * 1. Resolve: a block that rewrites the raw block already there with the same bytes is left alone without hashing
 *    (one pread per run of adjacent old blocks and a memcmp cost far less than SHA-256: the "nopwrite" of ZFS);
 *    after a run where that read found nothing the same, the next runs skip it, more of them after each such run
 *    (new data over old costs the read for nothing: 8% of the server's time in a unique-data write job). The rest
 *    are hashed: zeros, known content, or new content (encoded and given a free slot). Two blocks of the
 *    run with the same new content share one slot. After lz4 fails to shrink a block, the next ones that only
 *    might compress are stored raw without trying, more of them after each miss.
 * 2. Write the new blocks: slots that follow each other in the file go out in one pwrite, straight from the
 *    caller's buffer when the blocks are raw and adjacent there too. If this fails, the slots are released and
 *    nothing else has changed.
 * 3. Apply: every new reference is taken before any old one is dropped, so a block that moves within the run never
 *    reaches refcount zero (an uncommitted block at zero would give its slot away at once).
 */
import type { BlockFile, EncodedBlock } from "./block-file.ts";
import type { BlockIndex, Entry } from "./block-index.ts";
import type { SlotAllocator } from "./allocator.ts";
import { UNITS_PER_BLOCK, entryOf, slotOf, unitsOf, type DedupCompression } from "./layout.ts";
import type { MapPages } from "./map-pages.ts";

interface NewBlock {
  readonly slot: number;
  readonly encoded: EncodedBlock;
  readonly hash: Uint8Array;
  readonly key: string;
  /** Where its content starts in the run (for writing raw blocks straight from the caller's buffer). */
  readonly at: number;
  entry?: Entry;
}

/** The most new blocks stored raw untried after a run of lz4 misses. */
const MAX_SKIP = 256;
/** The most runs stored without reading the blocks they replace, after runs where none was the same. */
const MAX_PRE_READ_SKIP = 64;

const ZERO = null;
/** The block already holds exactly this content. */
const SAME = undefined;
type Target = Entry | NewBlock | typeof ZERO | typeof SAME;

export interface RunParts {
  readonly blockSize: number;
  readonly compression: DedupCompression;
  readonly file: BlockFile;
  readonly index: BlockIndex;
  readonly map: MapPages;
  readonly allocator: SlotAllocator;
  readonly zero: Buffer;
  readonly releaseSlot: (slot: number, units: number) => void;
}

function isNew(target: Entry | NewBlock): target is NewBlock {
  return "encoded" in target;
}

export class BlockRunWriter {
  private readonly hash = Buffer.alloc(32);
  private staging = Buffer.alloc(0);
  private previous = Buffer.alloc(0);
  /** New blocks still to store raw without trying lz4, and the skip the next miss sets (doubling per miss). */
  private skipMaybe = 0;
  private backoff = 0;
  /** Runs still to store without the read of the blocks they replace, and the skip the next fruitless read sets. */
  private skipPreRead = 0;
  private preReadBackoff = 0;
  /** Runs that were stored without that read (for the tests). */
  preReadsSkipped = 0;

  constructor(private readonly parts: RunParts) {}

  /**
   * Makes blocks `first`, `first + 1`, ... hold `data` (a whole number of blocks). Throws before changing anything.
   * `hashes`, when given, holds the SHA-256 of each block (32 bytes each, computed off the serving thread).
   */
  store(first: number, data: Uint8Array, hashes?: Uint8Array): void {
    const fresh: NewBlock[] = [];
    let targets: Target[];
    try {
      targets = this.resolve(first, data, fresh, hashes);
      this.writeNew(fresh, data);
    } catch (e) {
      for (const block of fresh) this.parts.releaseSlot(block.slot, block.encoded.units);
      throw e;
    }
    this.apply(first, targets);
  }

  /** The target of each block; new blocks get a slot and are added to `fresh`. */
  private resolve(first: number, data: Uint8Array, fresh: NewBlock[], hashes: Uint8Array | undefined): Target[] {
    const { blockSize: bs, index, allocator, zero } = this.parts;
    const targets: Target[] = [];
    const inRun = new Map<string, NewBlock>();
    const loaded = this.preRead(first, data.length / bs);
    let compared = 0;
    let same = 0;
    for (let at = 0; at < data.length; at += bs) {
      const content = data.subarray(at, at + bs);
      if (loaded !== undefined && loaded[at / bs] === 1) {
        compared++;
        if (this.previous.compare(content, 0, bs, at, at + bs) === 0) {
          same++;
          targets.push(SAME);
          continue;
        }
      }
      if (zero.equals(content)) {
        targets.push(ZERO);
        continue;
      }
      if (hashes === undefined) Bun.SHA256.hash(content, this.hash);
      else this.hash.set(hashes.subarray((at / bs) * 32, (at / bs) * 32 + 32));
      const key = this.hash.toString("latin1");
      const known = index.withHash(this.hash, key);
      if (known !== undefined) {
        targets.push(known);
        continue;
      }
      let block = inRun.get(key);
      if (block === undefined) {
        const encoded = this.encode(content);
        block = { slot: allocator.allocate(encoded.units), encoded, hash: new Uint8Array(this.hash), key, at };
        inRun.set(key, block);
        fresh.push(block);
      }
      targets.push(block);
    }
    if (compared > 0) this.notePreRead(same > 0);
    return targets;
  }

  /** The raw blocks the run replaces, unless recent runs showed that reading them finds nothing the same. */
  private preRead(first: number, count: number): Uint8Array | undefined {
    if (this.skipPreRead === 0) return this.loadPrevious(first, count);
    this.skipPreRead--;
    this.preReadsSkipped++;
    return undefined;
  }

  private notePreRead(foundSame: boolean): void {
    if (foundSame) {
      this.preReadBackoff = 0;
      return;
    }
    this.preReadBackoff = Math.min(Math.max(1, this.preReadBackoff * 2), MAX_PRE_READ_SKIP);
    this.skipPreRead = this.preReadBackoff;
  }

  /**
   * Encodes a new block. lz4 is tried with a back-off: each miss doubles how many of the next blocks are stored
   * raw untried (up to 256), a success resets it. Data written together tends to be alike, and a miss cost
   * 13-40 us, several times the block's SHA-256 (fio's buffers made lz4 the largest cost of writing new data over
   * NBD). Blocks that look random are never tried and do not count.
   */
  private encode(content: Uint8Array): EncodedBlock {
    const { file, compression } = this.parts;
    const encoded = file.encode(content, compression, this.skipMaybe === 0);
    if (encoded.missed) {
      this.backoff = Math.min(Math.max(1, this.backoff * 2), MAX_SKIP);
      this.skipMaybe = this.backoff;
    } else if (encoded.skipped) {
      this.skipMaybe--;
    } else if (encoded.units < UNITS_PER_BLOCK) {
      this.backoff = 0;
    }
    return encoded;
  }

  /**
   * Reads the raw blocks the run's addresses hold now into `previous` (adjacent slots in one pread); returns which
   * blocks were loaded. Compressed and zero blocks are not: those are decided by hash.
   */
  private loadPrevious(first: number, count: number): Uint8Array {
    const { blockSize: bs, map, file } = this.parts;
    const loaded = new Uint8Array(count);
    if (this.previous.length < count * bs) this.previous = Buffer.alloc(count * bs);
    for (let i = 0; i < count; ) {
      const entry = map.get(first + i);
      if (entry === 0 || unitsOf(entry) !== UNITS_PER_BLOCK) {
        i++;
        continue;
      }
      let j = i + 1;
      while (j < count && map.get(first + j) === entry + (j - i) * UNITS_PER_BLOCK * 16) j++;
      file.readRaw(this.previous, i * bs, (j - i) * bs, slotOf(entry) * file.unit);
      loaded.fill(1, i, j);
      i = j;
    }
    return loaded;
  }

  /** Writes new blocks, one pwrite per group of slots that follow each other in the file. */
  private writeNew(fresh: readonly NewBlock[], data: Uint8Array): void {
    const { file } = this.parts;
    for (let i = 0; i < fresh.length; ) {
      let j = i + 1;
      let direct = fresh[i]!.encoded.units === UNITS_PER_BLOCK;
      while (j < fresh.length && fresh[j]!.slot === fresh[j - 1]!.slot + fresh[j - 1]!.encoded.units) {
        const raw = fresh[j]!.encoded.units === UNITS_PER_BLOCK;
        direct &&= raw && fresh[j]!.at === fresh[j - 1]!.at + this.parts.blockSize;
        j++;
      }
      const first = fresh[i]!;
      const last = fresh[j - 1]!;
      const end = (last.slot + last.encoded.units) * file.unit;
      const start = first.slot * file.unit;
      if (j - i === 1) file.write(first.slot, first.encoded.bytes);
      else if (direct) file.write(first.slot, data.subarray(first.at, first.at + end - start));
      else file.write(first.slot, this.gather(fresh, i, j, start, end - start));
      i = j;
    }
  }

  /** Copies blocks i..j-1 into one buffer laid out as their slots are (gaps after compressed blocks zeroed). */
  private gather(fresh: readonly NewBlock[], i: number, j: number, start: number, length: number): Buffer {
    if (this.staging.length < length) this.staging = Buffer.alloc(Math.max(length, this.staging.length * 2));
    const out = this.staging.subarray(0, length);
    const unit = this.parts.file.unit;
    for (let k = i; k < j; k++) {
      const { slot, encoded } = fresh[k]!;
      const at = slot * unit - start;
      out.set(encoded.bytes, at);
      out.fill(0, at + encoded.bytes.length, at + encoded.units * unit);
    }
    return out;
  }

  private apply(first: number, targets: readonly Target[]): void {
    const { index, map } = this.parts;
    const dropped: number[] = [];
    for (let i = 0; i < targets.length; i++) {
      const target = targets[i]!;
      if (target === SAME) continue;
      const old = map.get(first + i);
      let entry = 0;
      if (target !== ZERO) {
        let known: Entry;
        if (isNew(target)) known = target.entry ??= index.add(target.slot, target.encoded.units, target.hash, target.key);
        else known = target;
        entry = entryOf(known.slot, known.units);
        if (entry === old) continue;
        index.ref(known);
      } else if (old === 0) {
        continue;
      }
      map.set(first + i, entry);
      if (old !== 0) dropped.push(old);
    }
    for (const old of dropped) index.unref(index.atSlot(slotOf(old), unitsOf(old)));
  }
}
