/** Small pieces the dedup device suites share: reading one of the device's gauges, and incompressible data. */
import type { DedupDevice } from "../../src/devices/dedup/index.ts";

/** The value of the dedup device's gauge `name`; a missing gauge fails the test. */
export function gauge(dev: DedupDevice, name: string): number {
  const found = dev.stats().gauges.find((g) => g.name === name);
  if (found === undefined) throw new Error(`no gauge "${name}"`);
  return found.value;
}

/** `length` random bytes (getRandomValues fills at most 64 KiB per call). */
export function randomBytes(length: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i += 65536) crypto.getRandomValues(out.subarray(i, i + 65536));
  return out;
}
