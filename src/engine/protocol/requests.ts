/**
 * Transmission-phase requests: the parsed header and the checks that decide, before a device sees anything,
 * whether a request is acceptable and which NBD error it earns if not.
 */
import {
  CMD,
  CMD_FLAG_DF,
  CMD_FLAG_FAST_ZERO,
  CMD_FLAG_FUA,
  CMD_FLAG_NO_HOLE,
  CMD_FLAG_REQ_ONE,
  MAX_REQUEST_SIZE,
  NBD_ERR,
} from "./constants.ts";

/** One request as read from the wire. The handle is kept as two 32-bit halves so parsing allocates nothing. */
export interface Request {
  readonly type: number;
  readonly flags: number;
  readonly handleHi: number;
  readonly handleLo: number;
  readonly offset: number;
  readonly length: number;
  /** When the request was received (performance.now()), for latency metrics. */
  readonly started: number;
  /** Bytes of the memory budget it holds until it is answered (`requestCharge`). */
  readonly charge: number;
}

/** What the server allows, fixed once the handshake is over. */
export interface RequestPolicy {
  readonly size: number;
  readonly readOnly: boolean;
  readonly trim: boolean;
  readonly fastZero: boolean;
  readonly structuredReplies: boolean;
  readonly baseAllocation: boolean;
  /** The largest READ or WRITE served (`maxRequestSize`); longer ones are refused with EINVAL. */
  readonly maxRequest: number;
}

/** Budget bytes for what a request holds besides its payload: its record, its promise, its reply header. */
export const REQUEST_OVERHEAD = 1024;

/** The largest READ or WRITE a server with `memoryLimit` bytes of budget serves: 64 MiB, or the budget if smaller. */
export function maxRequestSize(memoryLimit: number): number {
  return Math.min(MAX_REQUEST_SIZE, memoryLimit);
}

/**
 * What a request holds of the memory budget from the moment it is read until its reply is queued: a READ its data,
 * a WRITE its payload, anything else (and a READ or WRITE too long to be served, which is refused) its overhead.
 */
export function requestCharge(type: number, length: number, maxRequest: number): number {
  const carries = (type === CMD.READ || type === CMD.WRITE) && length <= maxRequest;
  return carries ? length + REQUEST_OVERHEAD : REQUEST_OVERHEAD;
}

/** The largest offset that still fits exactly in a JavaScript number's high 32-bit half. */
const MAX_OFFSET_HIGH = 2 ** 21;

/** Combines the two 32-bit halves of a 64-bit offset; offsets past 2^53 become Infinity (always out of range). */
export function joinOffset(high: number, low: number): number {
  return high >= MAX_OFFSET_HIGH ? Number.POSITIVE_INFINITY : high * 4294967296 + low;
}

/**
 * The flags each command may carry. FUA is advertised, so the spec requires accepting it on every command; where it
 * means nothing (READ, FLUSH, CACHE, BLOCK_STATUS) it is ignored, as nbdkit does.
 */
function allowedFlags(type: number, policy: RequestPolicy): number {
  switch (type) {
    case CMD.READ:
      return CMD_FLAG_FUA | (policy.structuredReplies ? CMD_FLAG_DF : 0);
    case CMD.WRITE_ZEROES:
      return CMD_FLAG_FUA | CMD_FLAG_NO_HOLE | (policy.fastZero ? CMD_FLAG_FAST_ZERO : 0);
    case CMD.BLOCK_STATUS:
      return CMD_FLAG_FUA | CMD_FLAG_REQ_ONE;
    default:
      return CMD_FLAG_FUA;
  }
}

/** A rejected request: the NBD error for the reply and a sentence for the log. */
export interface Rejection {
  readonly error: number;
  readonly reason: string;
}

/** Checks a request against the protocol and the export; returns why it must fail, or undefined when it is fine. */
export function checkRequest(req: Request, policy: RequestPolicy): Rejection | undefined {
  const { type } = req;
  if (
    type !== CMD.READ &&
    type !== CMD.WRITE &&
    type !== CMD.FLUSH &&
    type !== CMD.TRIM &&
    type !== CMD.CACHE &&
    type !== CMD.WRITE_ZEROES &&
    type !== CMD.BLOCK_STATUS
  ) {
    return { error: NBD_ERR.EINVAL, reason: `unknown command ${type}` };
  }
  const extra = req.flags & ~allowedFlags(type, policy);
  if (extra !== 0) return { error: NBD_ERR.EINVAL, reason: `flags 0x${extra.toString(16)} are not valid for command ${type}` };
  if (type === CMD.FLUSH) return undefined;
  const writes = type === CMD.WRITE || type === CMD.WRITE_ZEROES || type === CMD.TRIM;
  if (writes && policy.readOnly) return { error: NBD_ERR.EPERM, reason: "the export is read-only" };
  if (type === CMD.TRIM && !policy.trim) return { error: NBD_ERR.EINVAL, reason: "trim was not advertised" };
  if (type === CMD.BLOCK_STATUS && !policy.baseAllocation) {
    return { error: NBD_ERR.EINVAL, reason: "block status without a negotiated base:allocation context" };
  }
  if (req.length === 0) return { error: NBD_ERR.EINVAL, reason: `zero-length command ${type}` };
  if ((type === CMD.READ || type === CMD.WRITE) && req.length > policy.maxRequest) {
    return { error: NBD_ERR.EINVAL, reason: `request of ${req.length} bytes exceeds the ${policy.maxRequest}-byte maximum` };
  }
  if (req.offset + req.length > policy.size) {
    // Writing past the end is "no space"; anything else past the end is an invalid argument (as nbdkit does).
    const error = type === CMD.WRITE || type === CMD.WRITE_ZEROES ? NBD_ERR.ENOSPC : NBD_ERR.EINVAL;
    return { error, reason: `range ${req.offset}+${req.length} is outside the ${policy.size}-byte export` };
  }
  return undefined;
}
