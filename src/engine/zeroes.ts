/**
 * Central emulation of WRITE_ZEROES for devices that do not implement `writeZeroes`: plain writes from one shared
 * zero buffer, so no device has to write this loop itself.
 */
import type { BlockDevice } from "../devices/device.ts";

const ZERO_CHUNK = 1024 * 1024;
let zeroChunk: Uint8Array | undefined;

export async function emulateWriteZeroes(device: BlockDevice, offset: number, length: number, fua: boolean): Promise<void> {
  zeroChunk ??= new Uint8Array(ZERO_CHUNK);
  for (let done = 0; done < length; done += ZERO_CHUNK) {
    const n = Math.min(ZERO_CHUNK, length - done);
    await device.write(offset + done, zeroChunk.subarray(0, n), fua && done + n === length ? { fua: true } : undefined);
  }
}
