/** The byte shapes of option haggling: option replies, error replies, and bounds-checked reads of option data. */
import { MAX_STRING_SIZE, OPTION_REPLY_MAGIC } from "./constants.ts";

export const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder("utf-8", { fatal: true });

export function optionReply(option: number, type: number, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  const out = Buffer.alloc(20 + data.length);
  out.writeBigUInt64BE(OPTION_REPLY_MAGIC, 0);
  out.writeUInt32BE(option, 8);
  out.writeUInt32BE(type, 12);
  out.writeUInt32BE(data.length, 16);
  out.set(data, 20);
  return out;
}

export function errorReply(option: number, type: number, message: string): Uint8Array {
  return optionReply(option, type, textEncoder.encode(message));
}

/** A 16-bit or 32-bit number followed by UTF-8 text: the shape of NBD_INFO_NAME/DESCRIPTION and of
 * NBD_REP_SERVER / NBD_REP_META_CONTEXT bodies. */
export function numberThenText(bytesOfNumber: 2 | 4, value: number, text: string): Buffer {
  const encoded = textEncoder.encode(text);
  const body = Buffer.alloc(bytesOfNumber + encoded.length);
  if (bytesOfNumber === 2) body.writeUInt16BE(value, 0);
  else body.writeUInt32BE(value, 0);
  body.set(encoded, bytesOfNumber);
  return body;
}

/** Incoming option data with bounds-checked reads; a short read or an unusable string throws MalformedOption. */
export class OptionReader {
  private pos = 0;
  constructor(private readonly data: Buffer) {}
  u16(): number {
    this.need(2);
    const v = this.data.readUInt16BE(this.pos);
    this.pos += 2;
    return v;
  }
  u32(): number {
    this.need(4);
    const v = this.data.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }
  string(length: number): string {
    if (length > MAX_STRING_SIZE) throw new MalformedOption(`a name of ${length} bytes is longer than NBD's ${MAX_STRING_SIZE}-byte limit`);
    this.need(length);
    const bytes = this.data.subarray(this.pos, this.pos + length);
    this.pos += length;
    try {
      return textDecoder.decode(bytes);
    } catch {
      throw new MalformedOption("a name is not valid UTF-8");
    }
  }
  get remaining(): number {
    return this.data.length - this.pos;
  }
  private need(n: number): void {
    if (this.pos + n > this.data.length) throw new MalformedOption("option data is shorter than its fields say");
  }
}

export class MalformedOption extends Error {}
