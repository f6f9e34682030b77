/**
 * The transmission-phase half of the test client: request encoding, reply and structured-chunk decoding, and an
 * `Nbd` connection that frames replies by handle so tests can pipeline and collect out-of-order replies.
 */
import type { ExportDetails, RawClient } from "./raw-client.ts";
import { CHUNK, CHUNK_FLAG_DONE, CMD, REQUEST_MAGIC, SIMPLE_REPLY_MAGIC, STRUCTURED_REPLY_MAGIC } from "./wire.ts";

export interface Command {
  readonly type: number;
  readonly flags?: number;
  /** A number, or a bigint for offsets past 2^53. */
  readonly offset?: number | bigint;
  /** Defaults to data's length. */
  readonly length?: number;
  readonly data?: Uint8Array;
  readonly handle?: bigint;
  /** Overrides the request magic, to send broken requests. */
  readonly magic?: number;
}

export function encodeRequest(cmd: Command, handle: bigint): Buffer {
  const data = cmd.data ?? new Uint8Array(0);
  const b = Buffer.alloc(28 + data.length);
  b.writeUInt32BE(cmd.magic ?? REQUEST_MAGIC, 0);
  b.writeUInt16BE(cmd.flags ?? 0, 4);
  b.writeUInt16BE(cmd.type, 6);
  b.writeBigUInt64BE(handle, 8);
  b.writeBigUInt64BE(BigInt(cmd.offset ?? 0), 16);
  b.writeUInt32BE(cmd.length ?? data.length, 24);
  b.set(data, 28);
  return b;
}

/** One reply, or one structured chunk. `data` is the read payload (simple or OFFSET_DATA). */
export interface Reply {
  readonly structured: boolean;
  readonly handle: bigint;
  readonly error: number;
  /** Structured chunks only. */
  readonly chunkType?: number;
  readonly chunkFlags?: number;
  readonly offset?: number;
  readonly data?: Buffer;
  readonly message?: string;
  readonly contextId?: number;
  readonly descriptors?: ReadonlyArray<{ readonly length: number; readonly flags: number }>;
  /** Arrival order on this connection, counting from 0. */
  readonly seq: number;
}

/** A transmission-phase connection that remembers READ lengths, so simple replies can be framed. */
export class Nbd {
  private nextHandle = 1n;
  private readonly readLengths = new Map<bigint, number>();
  private seq = 0;

  constructor(
    readonly raw: RawClient,
    readonly details: ExportDetails,
    readonly structured: boolean,
    readonly contextId: number | undefined,
  ) {}

  /** Encodes commands into one buffer (send it with raw.send) and returns it with their handles. */
  encode(cmds: readonly Command[]): { bytes: Buffer; handles: bigint[] } {
    const handles: bigint[] = [];
    const parts = cmds.map((cmd) => {
      const handle = cmd.handle ?? this.nextHandle++;
      handles.push(handle);
      if (cmd.type === CMD.READ) this.readLengths.set(handle, cmd.length ?? 0);
      return encodeRequest(cmd, handle);
    });
    return { bytes: Buffer.concat(parts), handles };
  }

  /** Sends every command in one write; returns their handles. */
  send(...cmds: Command[]): bigint[] {
    const { bytes, handles } = this.encode(cmds);
    this.raw.send(bytes);
    return handles;
  }

  /** The next reply or structured chunk, whichever handle it is for. */
  async next(timeoutMs?: number): Promise<Reply> {
    const seq = this.seq++;
    const head = await this.raw.read(4, timeoutMs);
    const magic = head.readUInt32BE(0);
    if (magic === SIMPLE_REPLY_MAGIC) {
      const h = await this.raw.read(12, timeoutMs);
      const error = h.readUInt32BE(0);
      const handle = h.readBigUInt64BE(4);
      const length = this.readLengths.get(handle);
      const data = error === 0 && length !== undefined ? await this.raw.read(length, timeoutMs) : undefined;
      return { structured: false, handle, error, data, seq };
    }
    if (magic !== STRUCTURED_REPLY_MAGIC) throw new Error(`reply starts with 0x${magic.toString(16)}, not a reply magic`);
    const h = await this.raw.read(16, timeoutMs);
    const chunkFlags = h.readUInt16BE(0);
    const chunkType = h.readUInt16BE(2);
    const handle = h.readBigUInt64BE(4);
    const length = h.readUInt32BE(12);
    const p = length > 0 ? await this.raw.read(length, timeoutMs) : Buffer.alloc(0);
    const base = { structured: true, handle, chunkFlags, chunkType, seq };
    switch (chunkType) {
      case CHUNK.OFFSET_DATA:
        return { ...base, error: 0, offset: Number(p.readBigUInt64BE(0)), data: p.subarray(8) };
      case CHUNK.BLOCK_STATUS: {
        const descriptors = [];
        for (let at = 4; at + 8 <= p.length; at += 8) descriptors.push({ length: p.readUInt32BE(at), flags: p.readUInt32BE(at + 4) });
        return { ...base, error: 0, contextId: p.readUInt32BE(0), descriptors };
      }
      case CHUNK.ERROR:
      case CHUNK.ERROR_OFFSET: {
        const messageLength = p.readUInt16BE(4);
        if (6 + messageLength + (chunkType === CHUNK.ERROR_OFFSET ? 8 : 0) !== p.length) {
          throw new Error(`error chunk of ${p.length} bytes claims a ${messageLength}-byte message`);
        }
        return { ...base, error: p.readUInt32BE(0), message: p.subarray(6, 6 + messageLength).toString() };
      }
      default:
        return { ...base, error: 0, data: p };
    }
  }

  /** Collects replies until every handle in `handles` has its final reply (a simple one, or a DONE chunk). */
  async collect(handles: readonly bigint[], timeoutMs?: number): Promise<Map<bigint, Reply[]>> {
    const waiting = new Set(handles);
    const got = new Map<bigint, Reply[]>();
    while (waiting.size > 0) {
      const r = await this.next(timeoutMs);
      if (!handles.includes(r.handle)) throw new Error(`reply for unexpected handle ${r.handle}`);
      if (!waiting.has(r.handle)) throw new Error(`reply for handle ${r.handle} after its final reply`);
      got.set(r.handle, [...(got.get(r.handle) ?? []), r]);
      if (!r.structured || (r.chunkFlags! & CHUNK_FLAG_DONE) !== 0) waiting.delete(r.handle);
    }
    return got;
  }

  /** Sends one command and returns its final reply (for structured replies, the DONE chunk, with all chunks' data). */
  async request(cmd: Command, timeoutMs?: number): Promise<Reply> {
    const [handle] = this.send(cmd);
    const chunks = (await this.collect([handle!], timeoutMs)).get(handle!)!;
    return chunks[chunks.length - 1]!;
  }

  /** READ that must succeed; returns the data. */
  async read(offset: number, length: number): Promise<Buffer> {
    const r = await this.request({ type: CMD.READ, offset, length });
    if (r.error !== 0 || !r.data) throw new Error(`READ ${offset}+${length} failed with error ${r.error}`);
    return r.data;
  }

  /** WRITE that must succeed. */
  async write(offset: number, data: Uint8Array, flags = 0): Promise<void> {
    const r = await this.request({ type: CMD.WRITE, offset, data, flags });
    if (r.error !== 0) throw new Error(`WRITE ${offset}+${data.length} failed with error ${r.error}`);
  }

  /** Ends the session politely (NBD_CMD_DISC) and waits for the server to close. */
  async disconnect(): Promise<void> {
    this.send({ type: CMD.DISC });
    await this.raw.waitClosed();
  }
}
