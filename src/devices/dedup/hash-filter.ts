/**
 * A Bloom filter over the SHA-256 of every stored block. Writing content the store has never seen is the common
 * case for new data, and without the filter each such block cost a sqlite lookup by hash (about 5 us, more than
 * hashing it) only to find nothing. The digest is already uniformly random, so its 32-bit words serve as the
 * filter's hash functions. Freed blocks stay in the filter (a false positive only costs that lookup) until it is
 * rebuilt when it grows.
 */

/** Bits per block and probes: about 1% false positives. */
const BITS_PER_BLOCK = 10;
const PROBES = 7;
const MIN_CAPACITY = 65536;

function word(hash: Uint8Array, i: number): number {
  const at = i * 4;
  return (hash[at]! | (hash[at + 1]! << 8) | (hash[at + 2]! << 16) | (hash[at + 3]! << 24)) >>> 0;
}

export class HashFilter {
  private readonly bits: Uint32Array;
  private readonly mask: number;
  /** Blocks added; past `capacity` the false-positive rate climbs and the owner should rebuild. */
  count = 0;

  constructor(readonly capacity: number) {
    let size = 32;
    while (size < Math.max(capacity, MIN_CAPACITY) * BITS_PER_BLOCK) size *= 2;
    this.bits = new Uint32Array(size / 32);
    this.mask = size - 1;
  }

  /** A filter sized for `blocks` blocks with room to grow, holding `hashes`. */
  static of(blocks: number, hashes: Iterable<Uint8Array>): HashFilter {
    const filter = new HashFilter(blocks * 2);
    for (const hash of hashes) filter.add(hash);
    return filter;
  }

  add(hash: Uint8Array): void {
    for (let i = 0; i < PROBES; i++) {
      const bit = word(hash, i) & this.mask;
      this.bits[bit >>> 5]! |= 1 << (bit & 31);
    }
    this.count++;
  }

  /** False means no stored block has this hash; true means one may. */
  mayContain(hash: Uint8Array): boolean {
    for (let i = 0; i < PROBES; i++) {
      const bit = word(hash, i) & this.mask;
      if ((this.bits[bit >>> 5]! & (1 << (bit & 31))) === 0) return false;
    }
    return true;
  }

  get full(): boolean {
    return this.count > Math.max(this.capacity, MIN_CAPACITY);
  }

  get memory(): number {
    return this.bits.byteLength;
  }
}
