/**
 * The workload of the dedup crash test (the objstore crash test runs it too, on a smaller volume), shared by the
 * child that runs it on a real store and the parent that replays it on a plain array: deterministic epochs of writes (many duplicate blocks, some compressible, some
 * unique, aligned and not), write-zeroes, trims and the odd FUA write, each epoch ending with a flush.
 */
import type { BlockDevice } from "../../src/devices/device.ts";
import { pattern } from "../conformance/helpers.ts";

export const CRASH_DEVICE_SIZE = 8 * 1024 * 1024;
const BLOCK = 4096;
const OPS_PER_EPOCH = 40;

export type CrashOp =
  | { readonly kind: "write"; readonly offset: number; readonly length: number; readonly content: number; readonly fua: boolean }
  | { readonly kind: "zero" | "trim"; readonly offset: number; readonly length: number };

function random(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

/** The operations of one epoch on a device of `deviceSize` bytes; the same arguments always give the same list. */
export function opsFor(seed: number, epoch: number, deviceSize = CRASH_DEVICE_SIZE): CrashOp[] {
  const next = random(seed * 1_000_003 + epoch * 7919 + 17);
  const ops: CrashOp[] = [];
  for (let i = 0; i < OPS_PER_EPOCH; i++) {
    const aligned = next() < 0.7;
    const length = aligned ? (1 + Math.floor(next() * 16)) * BLOCK : 1 + Math.floor(next() * 3 * BLOCK);
    const maxStart = deviceSize - length;
    const offset = aligned ? Math.floor((next() * maxStart) / BLOCK) * BLOCK : Math.floor(next() * maxStart);
    const roll = next();
    if (roll < 0.8) ops.push({ kind: "write", offset, length, content: Math.floor(next() * 2 ** 31), fua: next() < 0.05 });
    else if (roll < 0.9) ops.push({ kind: "zero", offset, length });
    else ops.push({ kind: "trim", offset, length });
  }
  return ops;
}

/**
 * A sub-block epoch: 512 B and 1 KiB writes, mostly sequential from a point that moves each epoch (so blocks are
 * rewritten piecewise and held for coalescing when a kill lands), some at random sectors, a few 512 B zeroes, and
 * the odd FUA write (which commits everything held).
 */
export function subBlockOpsFor(seed: number, epoch: number, deviceSize = CRASH_DEVICE_SIZE): CrashOp[] {
  const next = random(seed * 1_000_033 + epoch * 7907 + 29);
  const sectors = deviceSize / 512;
  let cursor = Math.floor(next() * (sectors - 4 * OPS_PER_EPOCH)) * 512;
  const ops: CrashOp[] = [];
  for (let i = 0; i < OPS_PER_EPOCH; i++) {
    const roll = next();
    const length = next() < 0.5 ? 512 : 1024;
    let offset = cursor;
    if (roll < 0.15) offset = Math.floor(next() * (sectors - 2)) * 512;
    else cursor += length;
    if (roll > 0.95) ops.push({ kind: "zero", offset, length: 512 });
    else ops.push({ kind: "write", offset, length, content: Math.floor(next() * 2 ** 31), fua: next() < 0.03 });
  }
  return ops;
}

export type CrashWorkload = "mixed" | "sub-block";

export function workloadOps(workload: CrashWorkload): (seed: number, epoch: number) => CrashOp[] {
  return workload === "mixed" ? opsFor : subBlockOpsFor;
}

const POOL = Array.from({ length: 16 }, (_, i) => pattern(BLOCK, 1000 + i));

/** Content of logical block `block` in a write with content seed `content`: duplicates, compressible or unique. */
function blockContent(content: number, block: number): Uint8Array {
  const pick = (content ^ Math.imul(block, 2654435761)) >>> 0;
  const kind = pick % 24;
  if (kind < 16) return POOL[kind]!;
  if (kind < 20) return new TextEncoder().encode(`block ${block} of write ${content} `.repeat(200).slice(0, BLOCK));
  return pattern(BLOCK, (pick % 100_000) + 7);
}

/** The bytes a write op puts on the device. */
export function writeData(op: Extract<CrashOp, { kind: "write" }>): Uint8Array {
  const out = new Uint8Array(op.length);
  for (let pos = op.offset; pos < op.offset + op.length; ) {
    const block = Math.floor(pos / BLOCK);
    const from = pos - block * BLOCK;
    const n = Math.min(BLOCK - from, op.offset + op.length - pos);
    out.set(blockContent(op.content, block).subarray(from, from + n), pos - op.offset);
    pos += n;
  }
  return out;
}

/** Applies `op` to the model (the dedup device reads trimmed ranges as zeros, so trim is modelled as zeroing). */
export function applyToModel(model: Uint8Array, op: CrashOp): void {
  if (op.kind === "write") model.set(writeData(op), op.offset);
  else model.fill(0, op.offset, op.offset + op.length);
}

export async function applyToDevice(dev: BlockDevice, op: CrashOp): Promise<void> {
  if (op.kind === "write") await dev.write(op.offset, writeData(op), { fua: op.fua });
  else if (op.kind === "zero") await dev.writeZeroes!(op.offset, op.length);
  else await dev.trim(op.offset, op.length);
}
