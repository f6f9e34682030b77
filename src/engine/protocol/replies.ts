/**
 * Encoders for transmission-phase replies (simple and structured), writing straight into a ReplyWriter's
 * staging buffer so a reply costs no allocation.
 */
import type { Extent } from "../../devices/device.ts";
import type { ReplyWriter } from "../reply-writer.ts";
import {
  BASE_ALLOCATION_ID,
  REPLY_FLAG_DONE,
  REPLY_TYPE,
  SIMPLE_REPLY_MAGIC,
  SIMPLE_REPLY_SIZE,
  STATE_HOLE,
  STATE_ZERO,
  STRUCTURED_REPLY_HEADER_SIZE,
  STRUCTURED_REPLY_MAGIC,
} from "./constants.ts";
import type { Request } from "./requests.ts";

function writeU64(buf: Buffer, value: number, at: number): void {
  buf.writeUInt32BE(Math.floor(value / 4294967296), at);
  buf.writeUInt32BE(value >>> 0, at + 4);
}

/** A simple reply: 16 bytes, then (only for a successful READ) the data. */
export function simpleReply(out: ReplyWriter, req: Request, error: number): void {
  const at = out.reserve(SIMPLE_REPLY_SIZE);
  const b = out.staging;
  b.writeUInt32BE(SIMPLE_REPLY_MAGIC, at);
  b.writeUInt32BE(error, at + 4);
  b.writeUInt32BE(req.handleHi, at + 8);
  b.writeUInt32BE(req.handleLo, at + 12);
}

function structuredHeader(out: ReplyWriter, req: Request, type: number, length: number, extra: number): number {
  const at = out.reserve(STRUCTURED_REPLY_HEADER_SIZE + extra);
  const b = out.staging;
  b.writeUInt32BE(STRUCTURED_REPLY_MAGIC, at);
  b.writeUInt16BE(REPLY_FLAG_DONE, at + 4);
  b.writeUInt16BE(type, at + 6);
  b.writeUInt32BE(req.handleHi, at + 8);
  b.writeUInt32BE(req.handleLo, at + 12);
  b.writeUInt32BE(length, at + 16);
  return at + STRUCTURED_REPLY_HEADER_SIZE;
}

/** A successful READ: a simple reply plus data, or one structured OFFSET_DATA chunk (so DF is always honoured). */
export function readReply(out: ReplyWriter, req: Request, data: Uint8Array, structured: boolean): void {
  if (structured) {
    const at = structuredHeader(out, req, REPLY_TYPE.OFFSET_DATA, 8 + data.length, 8);
    writeU64(out.staging, req.offset, at);
  } else {
    simpleReply(out, req, 0);
  }
  out.payload(data);
}

/** A failed request. READ with structured replies must fail with an error chunk, never a simple reply. */
export function errorReply(out: ReplyWriter, req: Request, error: number, structured: boolean, message: string): void {
  if (!structured) return simpleReply(out, req, error);
  const text = Buffer.from(message.slice(0, 200), "utf8");
  const at = structuredHeader(out, req, REPLY_TYPE.ERROR, 6 + text.length, 6 + text.length);
  out.staging.writeUInt32BE(error, at);
  out.staging.writeUInt16BE(text.length, at + 4);
  out.staging.set(text, at + 6);
}

/** Caps one reply's descriptors so it fits the staging buffer; clients ask again for the rest. */
const MAX_DESCRIPTORS = 1024;

/** A BLOCK_STATUS reply for base:allocation: the extents, merged and clipped to the request. */
export function blockStatusReply(out: ReplyWriter, req: Request, extents: readonly Extent[], onlyOne: boolean): void {
  const descriptors: number[] = [];
  let covered = 0;
  for (const extent of extents) {
    if (covered >= req.length || descriptors.length >= 2 * MAX_DESCRIPTORS) break;
    const length = Math.min(extent.length, req.length - covered);
    if (length <= 0) continue;
    const flags = (extent.hole ? STATE_HOLE : 0) | (extent.zero ? STATE_ZERO : 0);
    const last = descriptors.length - 2;
    if (last >= 0 && descriptors[last + 1] === flags) descriptors[last] = descriptors[last]! + length;
    else descriptors.push(length, flags);
    covered += length;
  }
  if (descriptors.length === 0) descriptors.push(req.length, 0);
  if (onlyOne) descriptors.length = 2;
  const count = descriptors.length / 2;
  const at = structuredHeader(out, req, REPLY_TYPE.BLOCK_STATUS, 4 + 8 * count, 4 + 8 * count);
  const b = out.staging;
  b.writeUInt32BE(BASE_ALLOCATION_ID, at);
  for (let i = 0; i < descriptors.length; i++) b.writeUInt32BE(descriptors[i]!, at + 4 + 4 * i);
}
