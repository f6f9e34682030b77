/**
 * A structure-aware NBD fuzzer for the robustness suite: random handshakes (options of every kind, with data that is
 * valid, truncated, padded, not UTF-8, too long) and random request streams (every command, random flags, offsets
 * in range and far past the end, lengths up to past the maximum), plus raw byte mutations. Each session checks what
 * the spec requires of the server's answers and returns the violations it saw, in words.
 */
import { CMD, INFO, type Command, Nbd, OPT, OPTION_REPLY_MAGIC, REP, RawClient, encodeRequest, infoData, metaContextData, option, openExport, u32 } from "../protocol/raw-client.ts";

const MiB = 1024 * 1024;
const REPLY_WAIT_MS = 15_000;

/** A small deterministic generator (xorshift32), so a failing seed can be replayed. */
export class Rng {
  private x: number;
  constructor(seed: number) {
    this.x = seed >>> 0 || 1;
  }
  next(): number {
    this.x ^= this.x << 13;
    this.x ^= this.x >>> 17;
    this.x ^= this.x << 5;
    return (this.x >>> 0) / 4294967296;
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) b[i] = this.int(256);
    return b;
  }
}

export interface FuzzTarget {
  readonly path: string;
  /** The export names that exist (the first is the default, ""). */
  readonly exports: readonly string[];
  readonly size: number;
  /** In-range writes, trims and zeroes stay below this offset (the witness owns what is above). */
  readonly writableBelow: number;
}

/** A name for an option: an existing export, the default, an unknown one, one that is not UTF-8, one too long. */
function exportName(rng: Rng, target: FuzzTarget): { bytes: Buffer; usable: boolean } {
  switch (rng.int(6)) {
    case 0:
      return { bytes: Buffer.from(""), usable: true };
    case 1:
      return { bytes: Buffer.from("no-such-export"), usable: false };
    case 2:
      return { bytes: Buffer.from([0x64, 0xc3, 0x28, 0xff]), usable: false };
    case 3:
      return { bytes: Buffer.alloc(4097 + rng.int(100), 0x61), usable: false };
    default:
      return { bytes: Buffer.from(rng.pick(target.exports)), usable: true };
  }
}

/** Option data: well formed most of the time, else truncated, padded or replaced with noise. */
function damaged(rng: Rng, data: Buffer): Buffer {
  switch (rng.int(8)) {
    case 0:
      return data.subarray(0, rng.int(data.length + 1));
    case 1:
      return Buffer.concat([data, rng.bytes(1 + rng.int(16))]);
    case 2:
      return rng.bytes(rng.int(64));
    default:
      return data;
  }
}

/**
 * One fuzzed handshake. Every option other than EXPORT_NAME and ABORT must be answered by well-formed replies for
 * that option ending in ACK or an error; EXPORT_NAME must be answered by the export's size and flags, or the
 * connection closed with nothing sent (it has no option reply); a GO that succeeded is followed by a READ that
 * must be answered.
 */
export async function fuzzHandshake(target: FuzzTarget, rng: Rng): Promise<string[]> {
  const problems: string[] = [];
  const c = await RawClient.connect(target.path);
  try {
    const greeting = await c.read(18, REPLY_WAIT_MS);
    const fixed = rng.chance(0.9);
    const noZeroes = rng.chance(0.7);
    if (greeting.readUInt16BE(16) !== 3) problems.push(`greeting flags ${greeting.readUInt16BE(16)}`);
    c.send(u32((fixed ? 1 : 0) | (noZeroes ? 2 : 0)));
    const count = 1 + rng.int(8);
    for (let i = 0; i < count; i++) {
      const kind = rng.pick(["list", "info", "go", "structured", "meta", "unknown", "starttls", "export-name", "abort", "huge"] as const);
      if (kind === "export-name") {
        const name = exportName(rng, target);
        c.send(option(OPT.EXPORT_NAME, name.bytes));
        if (name.usable) {
          const answer = await c.read(noZeroes ? 10 : 134, REPLY_WAIT_MS).catch((e: Error) => e);
          if (answer instanceof Error) problems.push(`EXPORT_NAME of a usable name: ${answer.message}`);
          else if (Number(answer.readBigUInt64BE(0)) !== target.size) problems.push(`EXPORT_NAME answered size ${answer.readBigUInt64BE(0)}`);
        } else {
          await c.waitClosed(REPLY_WAIT_MS).catch(() => problems.push("EXPORT_NAME of an unusable name did not close the connection"));
          if (c.buffered > 0) problems.push(`EXPORT_NAME of an unusable name was answered with ${c.buffered} bytes`);
        }
        return problems;
      }
      if (!fixed) {
        // Without fixed newstyle only EXPORT_NAME is known; anything else is refused (ERR_INVALID) and tolerated.
        c.send(option(kind === "list" ? OPT.LIST : OPT.INFO, infoData("")));
        const r = await optionReplies(c, kind === "list" ? OPT.LIST : OPT.INFO, problems);
        if (r !== undefined && r !== REP.ERR_INVALID) problems.push(`option without fixed newstyle answered 0x${r.toString(16)}`);
        continue;
      }
      const [opt, data] = optionFor(kind, rng, target);
      c.send(option(opt, data));
      if (opt === OPT.ABORT) {
        await c.waitClosed(REPLY_WAIT_MS).catch(() => problems.push("ABORT did not close the connection"));
        return problems;
      }
      const final = await optionReplies(c, opt, problems);
      if (final === undefined) return problems;
      if (kind === "huge" && final !== REP.ERR_TOO_BIG) problems.push(`an option over 64 KiB answered 0x${final.toString(16)}, not ERR_TOO_BIG`);
      if (opt === OPT.GO && final === REP.ACK) {
        const session = new Nbd(c, { size: target.size, flags: 0 }, false, undefined);
        const reply = await session.request({ type: CMD.READ, offset: 0, length: 4096 }, REPLY_WAIT_MS).catch((e: Error) => e);
        if (reply instanceof Error || reply.error !== 0) problems.push(`READ after a successful GO: ${reply instanceof Error ? reply.message : `error ${reply.error}`}`);
        return problems;
      }
    }
    c.send(option(OPT.ABORT));
    return problems;
  } catch (error) {
    problems.push(`handshake: ${error instanceof Error ? error.message : String(error)}`);
    return problems;
  } finally {
    c.destroy();
  }
}

function optionFor(kind: string, rng: Rng, target: FuzzTarget): [number, Buffer] {
  const name = exportName(rng, target).bytes;
  const infoRequests = Array.from({ length: rng.int(5) }, () => rng.pick([INFO.EXPORT, INFO.NAME, INFO.DESCRIPTION, INFO.BLOCK_SIZE, 77]));
  const withName = (n: Buffer, rest: Buffer) => Buffer.concat([u32(n.length), n, rest]);
  switch (kind) {
    case "list":
      return [OPT.LIST, rng.chance(0.8) ? Buffer.alloc(0) : rng.bytes(1 + rng.int(8))];
    case "info":
    case "go": {
      const requests = Buffer.alloc(2 + 2 * infoRequests.length);
      requests.writeUInt16BE(infoRequests.length, 0);
      infoRequests.forEach((r, i) => requests.writeUInt16BE(r, 2 + 2 * i));
      return [kind === "info" ? OPT.INFO : OPT.GO, damaged(rng, withName(name, requests))];
    }
    case "structured":
      return [OPT.STRUCTURED_REPLY, rng.chance(0.8) ? Buffer.alloc(0) : rng.bytes(4)];
    case "meta":
      return [rng.pick([OPT.LIST_META_CONTEXT, OPT.SET_META_CONTEXT]), damaged(rng, metaContextData(name.toString("latin1"), rng.chance(0.5) ? ["base:allocation"] : ["base:", "x:y"]))];
    case "starttls":
      return [OPT.STARTTLS, Buffer.alloc(0)];
    case "abort":
      return [OPT.ABORT, Buffer.alloc(0)];
    case "huge":
      // Longer than the server reads: it must skip it and answer ERR_TOO_BIG.
      return [OPT.INFO, Buffer.alloc(64 * 1024 + 1 + rng.int(256 * 1024), 0x41)];
    default:
      return [20 + rng.int(1000), rng.bytes(rng.int(32))];
  }
}

/** Reads replies to `opt` up to the final one; returns its type, or undefined (a problem recorded) when none came. */
async function optionReplies(c: RawClient, opt: number, problems: string[]): Promise<number | undefined> {
  for (let n = 0; n < 64; n++) {
    const head = await c.read(20, REPLY_WAIT_MS).catch((e: Error) => e);
    if (head instanceof Error) {
      problems.push(`option ${opt}: no final reply (${head.message})`);
      return undefined;
    }
    if (head.readBigUInt64BE(0) !== OPTION_REPLY_MAGIC) {
      problems.push(`option ${opt}: reply without the option reply magic`);
      return undefined;
    }
    if (head.readUInt32BE(8) !== opt) problems.push(`option ${opt}: reply names option ${head.readUInt32BE(8)}`);
    const type = head.readUInt32BE(12);
    const length = head.readUInt32BE(16);
    if (length > 0) await c.read(length, REPLY_WAIT_MS);
    if (type === REP.ACK || type >= 0x80000000) return type;
  }
  problems.push(`option ${opt}: more than 64 replies`);
  return undefined;
}

/** A random command: mostly valid, some out of range, with unknown flags, too long, or of unknown type. */
function command(rng: Rng, target: FuzzTarget): Command {
  const type = rng.pick([CMD.READ, CMD.READ, CMD.WRITE, CMD.WRITE, CMD.FLUSH, CMD.TRIM, CMD.CACHE, CMD.WRITE_ZEROES, CMD.BLOCK_STATUS, 9, 42]);
  const flags = rng.chance(0.7) ? 0 : rng.chance(0.5) ? 1 : rng.int(1 << 16);
  const roll = rng.int(20);
  let length = roll < 14 ? 1 + rng.int(128 * 1024) : roll < 17 ? rng.int(4 * MiB) : roll < 19 ? 0 : 64 * MiB + 1 + rng.int(1024);
  let offset: number | bigint = rng.int(Math.max(1, target.writableBelow - length));
  if (rng.chance(0.1)) offset = rng.chance(0.5) ? target.size - rng.int(4096) : (1n << 64n) - 1n - BigInt(rng.int(8192));
  if (type === CMD.WRITE) {
    // Payloads over the maximum are rare: the server reads and discards every byte of them.
    if (length > 64 * MiB && rng.chance(0.8)) length = 1 + rng.int(65536);
    return { type, flags, offset, data: rng.bytes(Math.min(length, 64 * MiB + 1024)) };
  }
  return { type, flags, offset, length };
}

/**
 * One fuzzed transmission session: a random request stream (in one write or several) after a GO. Every request must
 * get exactly one final reply with its own handle (the client reader rejects anything else, including READ data of
 * the wrong length), and the connection must stay usable.
 */
export async function fuzzRequests(target: FuzzTarget, rng: Rng): Promise<string[]> {
  const problems: string[] = [];
  let nbd: Nbd | undefined;
  try {
    nbd = await openExport(target.path, { exportName: rng.pick(target.exports), structured: rng.chance(0.5), baseAllocation: rng.chance(0.3) });
    const commands = Array.from({ length: 1 + rng.int(40) }, () => command(rng, target));
    const handles = rng.chance(0.5) ? nbd.send(...commands) : commands.map((cmd) => nbd!.send(cmd)[0]!);
    await nbd.collect(handles, REPLY_WAIT_MS).catch((e: Error) => problems.push(`replies to ${commands.map((c) => c.type).join(",")}: ${e.message}`));
    if (problems.length === 0) {
      const check = await nbd.request({ type: CMD.READ, offset: 0, length: 512 }, REPLY_WAIT_MS).catch((e: Error) => e);
      if (check instanceof Error || check.error !== 0) problems.push("the connection was unusable after the fuzzed requests");
    }
  } catch (error) {
    problems.push(`requests: ${error instanceof Error ? error.message : String(error)}`);
  } finally {
    nbd?.raw.destroy();
  }
  return problems;
}

/**
 * Raw mutation: a valid handshake and requests with random bytes changed, or the stream cut short. Nothing about
 * the answers is predicted: what these check is that the server survives them and keeps serving everyone else.
 */
export async function fuzzRaw(target: FuzzTarget, rng: Rng): Promise<string[]> {
  const stream = Buffer.concat([
    u32(3),
    option(OPT.STRUCTURED_REPLY),
    option(OPT.GO, infoData(target.exports[0]!, [INFO.BLOCK_SIZE])),
    encodeRequest({ type: CMD.WRITE, offset: 4096, data: Buffer.alloc(4096, 7) }, 1n),
    encodeRequest({ type: CMD.READ, offset: 4096, length: 4096 }, 2n),
    encodeRequest({ type: CMD.FLUSH }, 3n),
  ]);
  const mutated = Buffer.from(stream);
  for (let i = 0, n = 1 + rng.int(8); i < n; i++) mutated[rng.int(mutated.length)] = rng.int(256);
  const cut = rng.chance(0.3) ? mutated.subarray(0, rng.int(mutated.length)) : mutated;
  const c = await RawClient.connect(target.path);
  try {
    c.send(cut);
    // A half-sent handshake is closed at the deadline; a connection that got through keeps serving. Both are fine.
    await Bun.sleep(rng.int(200));
    return [];
  } finally {
    c.destroy();
  }
}
