/**
 * The bytes the objstore bench writes (bench/objstore.ts), all from fixed seeds so every run writes the same offsets
 * and the same data: a seeded PRNG, incompressible and "2:1" data, and the pools the sequential writes repeat.
 */
import { KiB, MiB } from "./objstore-format.ts";

export type DataKind = "2:1" | "random";

/** mulberry32: a small seeded PRNG, so every run writes the same offsets and bytes. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function fillRandom(out: Uint8Array, seed: number): Uint8Array {
  const next = prng(seed);
  const words = new Uint32Array(out.buffer, out.byteOffset, out.length >>> 2);
  for (let i = 0; i < words.length; i++) words[i] = (next() * 4294967296) >>> 0;
  return out;
}

const PHRASE = new TextEncoder().encode("usbd-tui objstore bench: the second half of every 4 KiB block repeats this.\n");

/**
 * `bytes` of data of the given kind. "random": incompressible. "2:1": every 4 KiB block is 2 KiB of random bytes
 * then 2 KiB of a repeated phrase, which lz4 packs to almost nothing (about 2:1 overall).
 */
function makeData(kind: DataKind, bytes: number, seed: number): Uint8Array {
  const out = fillRandom(new Uint8Array(bytes), seed);
  if (kind === "2:1") {
    for (let block = 0; block < bytes; block += 4 * KiB) {
      for (let at = block + 2 * KiB; at < block + 4 * KiB; at += PHRASE.length) out.set(PHRASE.subarray(0, Math.min(PHRASE.length, block + 4 * KiB - at)), at);
    }
  }
  return out;
}

/** A pool of data written over and over (lz4 sees 64 KiB at a time, so a 16 MiB pool repeating changes nothing). */
export const POOL_BYTES = 16 * MiB;
const pools = new Map<DataKind, Uint8Array>();
export function pool(kind: DataKind): Uint8Array {
  let p = pools.get(kind);
  if (!p) {
    p = makeData(kind, POOL_BYTES, kind === "random" ? 1 : 2);
    pools.set(kind, p);
  }
  return p;
}
