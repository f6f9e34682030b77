/**
 * Validation of a device's size and block size, shared by every device kind so that all of them accept and
 * refuse the same geometries with the same messages.
 */

/** The largest size a device may have: offsets must stay exact in a JavaScript number. */
export const MAX_DEVICE_SIZE = 2 ** 50;

/**
 * Checks `size` and `blockSize` and returns the block size to use. Without one, 4096 when the size allows it
 * (what filesystems want), else 512.
 */
export function resolveGeometry(kind: string, size: number, blockSize?: number): number {
  if (!Number.isSafeInteger(size) || size <= 0 || size % 512 !== 0 || size > MAX_DEVICE_SIZE) {
    throw new RangeError(
      `${kind} device: size ${size} is not a positive multiple of 512 bytes up to 2^50; pass a size like 1GiB`,
    );
  }
  const bs = blockSize ?? (size % 4096 === 0 ? 4096 : 512);
  if (!Number.isInteger(bs) || bs < 512 || bs > 65536 || (bs & (bs - 1)) !== 0) {
    throw new RangeError(`${kind} device: block size ${bs} is not a power of two between 512 and 65536`);
  }
  if (size % bs !== 0) {
    throw new RangeError(`${kind} device: size ${size} is not a multiple of the block size ${bs}`);
  }
  return bs;
}
