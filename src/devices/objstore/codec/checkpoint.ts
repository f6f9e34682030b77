/**
 * A checkpoint's content: the volume map as it was after log object `seq`, and the table of the log objects it
 * refers to (where each one's chunks are, so that reads need no header fetch). Stored in the log-object container
 * (kind 2) under `<volume>/checkpoints/<seq>.<epoch>`, so it is compressed and sealed like the log.
 *
 * Layout (little-endian): version u32; object count u32, then per object: seq f64, epoch u32, data length u32, live
 * bytes u32, and its layout (packLayout); page count u32, then per page: index f64, byte length u32, the page's bytes
 * (MapPage.pack).
 */
import { MapPage } from "../map-page.ts";
import { KIND_LOG, type ObjectLayout } from "./log-object.ts";

const VERSION = 1;

export interface CheckpointObject {
  readonly seq: number;
  readonly epoch: number;
  readonly dataLength: number;
  readonly live: number;
  readonly layout: ObjectLayout;
}

export interface CheckpointContent {
  readonly objects: readonly CheckpointObject[];
  /** Map pages by index; pages with no extents are left out. */
  readonly pages: ReadonlyArray<readonly [number, MapPage]>;
}

/** A log object's layout as bytes: salt (8), data start u32, chunk size u32, chunk count u32, the chunks. */
export function packLayout(layout: ObjectLayout): Uint8Array {
  const out = new Uint8Array(20 + layout.chunks.length * 4);
  const view = new DataView(out.buffer);
  out.set(layout.salt, 0);
  view.setUint32(8, layout.dataStart, true);
  view.setUint32(12, layout.chunkSize, true);
  view.setUint32(16, layout.chunks.length, true);
  for (let i = 0; i < layout.chunks.length; i++) view.setUint32(20 + i * 4, layout.chunks[i]!, true);
  return out;
}

export function unpackLayout(bytes: Uint8Array, seq: number, epoch: number, dataLength: number): ObjectLayout {
  if (bytes.length < 20) throw new Error(`object ${seq}: layout record too short`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const count = view.getUint32(16, true);
  if (bytes.length !== 20 + count * 4) throw new Error(`object ${seq}: layout record of ${bytes.length} bytes for ${count} chunks`);
  const chunks = new Uint32Array(count);
  for (let i = 0; i < count; i++) chunks[i] = view.getUint32(20 + i * 4, true);
  return { kind: KIND_LOG, seq, epoch, salt: bytes.slice(0, 8), dataLength, dataStart: view.getUint32(8, true), chunkSize: view.getUint32(12, true), chunks };
}

export function encodeCheckpoint(content: CheckpointContent): Uint8Array {
  const parts: Uint8Array[] = [];
  const head = new DataView(new ArrayBuffer(8));
  head.setUint32(0, VERSION, true);
  head.setUint32(4, content.objects.length, true);
  parts.push(new Uint8Array(head.buffer));
  for (const o of content.objects) {
    const fixed = new DataView(new ArrayBuffer(20));
    fixed.setFloat64(0, o.seq, true);
    fixed.setUint32(8, o.epoch, true);
    fixed.setUint32(12, o.dataLength, true);
    fixed.setUint32(16, o.live, true);
    parts.push(new Uint8Array(fixed.buffer), packLayout(o.layout));
  }
  const count = new DataView(new ArrayBuffer(4));
  count.setUint32(0, content.pages.length, true);
  parts.push(new Uint8Array(count.buffer));
  for (const [index, page] of content.pages) {
    const bytes = page.pack();
    const fixed = new DataView(new ArrayBuffer(12));
    fixed.setFloat64(0, index, true);
    fixed.setUint32(8, bytes.length, true);
    parts.push(new Uint8Array(fixed.buffer), bytes);
  }
  let total = 0;
  for (const p of parts) total += p.length;
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Parses `encodeCheckpoint`'s bytes; throws naming `what` on anything malformed. */
export function decodeCheckpoint(bytes: Uint8Array, what: string): CheckpointContent {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  let at = 0;
  const need = (n: number) => {
    if (at + n > bytes.length) throw new Error(`${what}: truncated checkpoint`);
  };
  need(8);
  if (view.getUint32(0, true) !== VERSION) throw new Error(`${what}: unknown checkpoint version ${view.getUint32(0, true)}`);
  const objectCount = view.getUint32(4, true);
  at = 8;
  const objects: CheckpointObject[] = [];
  for (let i = 0; i < objectCount; i++) {
    need(40);
    const seq = view.getFloat64(at, true);
    const epoch = view.getUint32(at + 8, true);
    const dataLength = view.getUint32(at + 12, true);
    const live = view.getUint32(at + 16, true);
    const chunkCount = view.getUint32(at + 36, true);
    need(40 + chunkCount * 4);
    if (!Number.isSafeInteger(seq) || seq < 0) throw new Error(`${what}: object ${i} has a bad sequence number`);
    const layout = unpackLayout(bytes.subarray(at + 20, at + 40 + chunkCount * 4), seq, epoch, dataLength);
    objects.push({ seq, epoch, dataLength, live, layout });
    at += 40 + chunkCount * 4;
  }
  need(4);
  const pageCount = view.getUint32(at, true);
  at += 4;
  const pages: Array<[number, MapPage]> = [];
  for (let i = 0; i < pageCount; i++) {
    need(12);
    const index = view.getFloat64(at, true);
    const length = view.getUint32(at + 8, true);
    at += 12;
    need(length);
    if (!Number.isSafeInteger(index) || index < 0) throw new Error(`${what}: page ${i} has a bad index`);
    pages.push([index, MapPage.unpack(bytes.subarray(at, at + length), `${what} page ${index}`)]);
    at += length;
  }
  if (at !== bytes.length) throw new Error(`${what}: ${bytes.length - at} bytes after the last page`);
  return { objects, pages };
}
