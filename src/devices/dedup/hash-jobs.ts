/**
 * The dedup device's work for the shared worker pool (src/shared/worker-pool.ts): SHA-256 of every block of a large
 * write, so the serving thread keeps answering while the other core hashes. Pure functions of their input.
 */

/** SHA-256 of each `blockSize` block of `data` (a whole number of blocks), 32 bytes per block, in order. */
export function hashBlocks(input: { readonly data: Uint8Array; readonly blockSize: number }): Uint8Array {
  const { data, blockSize } = input;
  const out = new Uint8Array((data.length / blockSize) * 32);
  for (let at = 0, i = 0; at < data.length; at += blockSize, i += 32) Bun.SHA256.hash(data.subarray(at, at + blockSize), out.subarray(i, i + 32));
  return out;
}

export const dedupJobs = { hashBlocks };
