/**
 * Small tools the conformance suite shares: deterministic test patterns, reads that copy, error matching that
 * accepts both thrown errors and rejected promises, and extents gathered across partial answers.
 */
import { expect } from "bun:test";
import {
  DeviceError,
  type BlockDevice,
  type DeviceCapabilities,
  type DeviceErrorCode,
  type Extent,
  resolveCapabilities,
} from "../../src/devices/device.ts";

export const KiB = 1024;
export const MiB = 1024 * KiB;

/** What a device claims and which optional calls it has: decides which checks run and which are skipped. */
export interface DeviceTraits {
  readonly capabilities: Required<DeviceCapabilities>;
  readonly writeZeroes: boolean;
  readonly extents: boolean;
  readonly reclaim: boolean;
  readonly cache: boolean;
}

export function traitsOf(dev: BlockDevice): DeviceTraits {
  return {
    capabilities: resolveCapabilities(dev),
    writeZeroes: dev.writeZeroes !== undefined,
    extents: dev.extents !== undefined,
    reclaim: dev.reclaim !== undefined,
    cache: dev.cache !== undefined,
  };
}

/** The device under test (replaced before every test) and the traits of its kind (fixed at registration). */
export interface SuiteContext {
  dev: BlockDevice;
  readonly traits: DeviceTraits;
}

/** Whether `data` holds one byte value throughout (a write that landed whole), and which. */
export function uniformValue(data: Uint8Array): number | undefined {
  const first = data[0];
  for (let i = 1; i < data.length; i++) if (data[i] !== first) return undefined;
  return first;
}

/** `length` bytes that are never zero and differ per seed, so a lost or misplaced write always shows. */
export function pattern(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    // xorshift: cheap and without the short period a linear pattern would have.
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = ((x >>> 0) % 255) + 1;
  }
  return out;
}

/** Reads and copies at once: a device may return a view of its own memory that a later write changes. */
export async function readCopy(dev: BlockDevice, offset: number, length: number): Promise<Uint8Array> {
  const data = await dev.read(offset, length);
  expect(data).toBeInstanceOf(Uint8Array);
  expect(data.length).toBe(length);
  return data.slice();
}

/** Index of the first byte where `a` and `b` differ, or -1; keeps failure messages short on large buffers. */
export function firstDifference(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

export function expectSameBytes(actual: Uint8Array, expected: Uint8Array, what: string): void {
  const at = firstDifference(actual, expected);
  expect(at === -1 ? "equal" : `${what}: first difference at byte ${at}`).toBe("equal");
}

export function isAllZero(data: Uint8Array): boolean {
  for (let i = 0; i < data.length; i++) if (data[i] !== 0) return false;
  return true;
}

/** The error `call` throws or rejects with, or undefined when it succeeds. */
export async function errorOf(call: () => unknown): Promise<unknown> {
  try {
    await call();
  } catch (e) {
    return e;
  }
  return undefined;
}

/** Expects `call` to fail with DeviceError(code), thrown synchronously or as a rejection. */
export async function expectDeviceError(call: () => unknown, code: DeviceErrorCode, what: string): Promise<void> {
  const e = await errorOf(call);
  const got =
    e instanceof DeviceError || (e instanceof Error && e.name === "DeviceError")
      ? (e as DeviceError).code
      : `no DeviceError (${e === undefined ? "it succeeded" : String(e)})`;
  expect(`${what}: ${got}`).toBe(`${what}: ${code}`);
}

/**
 * Extents covering [offset, offset+length), calling again where a device answered for a prefix only, as the
 * engine does. Each answer must make progress and stay inside the range.
 */
export async function allExtents(dev: BlockDevice, offset: number, length: number): Promise<Extent[]> {
  const extents = dev.extents;
  if (extents === undefined) return [];
  const out: Extent[] = [];
  let done = 0;
  while (done < length) {
    const part = await extents.call(dev, offset + done, length - done);
    const covered = part.reduce((sum, e) => sum + e.length, 0);
    expect(part.length).toBeGreaterThan(0);
    for (const e of part) expect(e.length).toBeGreaterThan(0);
    expect(covered).toBeGreaterThan(0);
    expect(covered).toBeLessThanOrEqual(length - done);
    out.push(...part);
    done += covered;
  }
  return out;
}

/** The extents among `extents` (starting at `base`) that overlap [offset, offset+length). */
export function overlapping(extents: readonly Extent[], base: number, offset: number, length: number): Extent[] {
  const out: Extent[] = [];
  let pos = base;
  for (const e of extents) {
    if (pos < offset + length && pos + e.length > offset) out.push(e);
    pos += e.length;
  }
  return out;
}
