/**
 * Generic netlink, the kernel's request/reply bus for subsystems such as nbd: message and attribute codecs (pure
 * byte layouts from the uapi headers linux/netlink.h and linux/genetlink.h) and a small synchronous client that
 * sends one request and collects its replies up to the kernel's acknowledgement.
 */
import { LibcError, closeFd } from "./libc.ts";
import { AF_NETLINK, SOCK_RAW, SO_RCVTIMEO, openSocket, receive, sendAll, setSocketTimeout } from "./sockets.ts";
import { ByteReader, ByteWriter } from "./struct.ts";

export const NETLINK_GENERIC = 16;

/** struct nlmsghdr: len u32, type u16, flags u16, seq u32, pid u32. */
export const NLMSG_HDRLEN = 16;
/** struct genlmsghdr: cmd u8, version u8, reserved u16. */
export const GENL_HDRLEN = 4;
/** struct nlattr: len u16, type u16, then the payload padded to 4 bytes. */
export const NLA_HDRLEN = 4;

export const NLMSG_NOOP = 1;
export const NLMSG_ERROR = 2;
export const NLMSG_DONE = 3;

export const NLM_F_REQUEST = 0x1;
export const NLM_F_ACK = 0x4;

/** The two top bits of nlattr.nla_type are flags (nested, network byte order). */
const NLA_TYPE_MASK = 0x3fff;

export const GENL_ID_CTRL = 0x10;
export const CTRL_CMD_GETFAMILY = 3;
export const CTRL_ATTR_FAMILY_ID = 1;
export const CTRL_ATTR_FAMILY_NAME = 2;
export const CTRL_ATTR_VERSION = 3;
export const CTRL_ATTR_MAXATTR = 5;

const ENOENT = 2;
const REPLY_TIMEOUT_MS = 10_000;
const RECEIVE_BUFFER_SIZE = 64 * 1024;

/** One attribute: a payload, or (for nested attributes) a list of attributes. */
export interface Attribute {
  readonly type: number;
  readonly value: Uint8Array | readonly Attribute[];
}

/** Builders for the attribute payload types the kernel's policies name (NLA_U8, NLA_U32, NLA_U64, ...). */
export const nla = {
  u8: (type: number, value: number): Attribute => ({ type, value: new ByteWriter(1).u8(value).finish() }),
  u16: (type: number, value: number): Attribute => ({ type, value: new ByteWriter(2).u16(value).finish() }),
  u32: (type: number, value: number): Attribute => ({ type, value: new ByteWriter(4).u32(value).finish() }),
  u64: (type: number, value: number): Attribute => ({ type, value: new ByteWriter(8).u64(value).finish() }),
  /** NLA_STRING / NLA_NUL_STRING: UTF-8 with a terminating NUL. */
  string: (type: number, value: string): Attribute => ({ type, value: new ByteWriter().cstring(value).finish() }),
  nested: (type: number, children: readonly Attribute[]): Attribute => ({ type, value: children }),
};

/** Appends attributes in wire form: each header's length covers its payload, and each attribute is 4-aligned. */
export function encodeAttributes(attributes: readonly Attribute[], out = new ByteWriter()): ByteWriter {
  for (const a of attributes) {
    const start = out.length;
    out.u16(0).u16(a.type);
    if (a.value instanceof Uint8Array) out.bytes(a.value);
    else encodeAttributes(a.value, out);
    out.patchU16(start, out.length - start);
    out.align(4);
  }
  return out;
}

export interface GenlRequest {
  /** The family's numeric id (GENL_ID_CTRL, or one resolved by name). */
  readonly family: number;
  readonly cmd: number;
  readonly version: number;
  readonly seq: number;
  readonly flags?: number;
  readonly attributes: readonly Attribute[];
}

/** A complete generic netlink request: nlmsghdr, genlmsghdr, attributes. */
export function encodeGenlRequest(request: GenlRequest): Uint8Array {
  const out = new ByteWriter(256);
  out.u32(0).u16(request.family).u16(request.flags ?? NLM_F_REQUEST | NLM_F_ACK).u32(request.seq).u32(0);
  out.u8(request.cmd).u8(request.version).u16(0);
  encodeAttributes(request.attributes, out);
  out.patchU32(0, out.length);
  return out.finish();
}

export interface NetlinkMessage {
  readonly type: number;
  readonly flags: number;
  readonly seq: number;
  readonly pid: number;
  /** Everything after the nlmsghdr. */
  readonly payload: Uint8Array;
}

/** Splits a datagram into its messages (each 4-aligned); a message whose length overruns the data is an error. */
export function decodeMessages(data: Uint8Array): NetlinkMessage[] {
  const messages: NetlinkMessage[] = [];
  let at = 0;
  while (data.length - at >= NLMSG_HDRLEN) {
    const r = new ByteReader(data, at);
    const length = r.u32();
    const type = r.u16();
    const flags = r.u16();
    const seq = r.u32();
    const pid = r.u32();
    if (length < NLMSG_HDRLEN || at + length > data.length) {
      throw new Error(`malformed netlink message: length ${length} at offset ${at} of ${data.length}`);
    }
    messages.push({ type, flags, seq, pid, payload: data.subarray(at + NLMSG_HDRLEN, at + length) });
    at += (length + 3) & ~3;
  }
  return messages;
}

/** One decoded attribute; nested attributes are decoded on demand with `decodeAttributes(value)`. */
export interface RawAttribute {
  readonly type: number;
  readonly value: Uint8Array;
}

/** The attributes in `data`, in order (repeated types kept, flag bits stripped from the type). */
export function decodeAttributes(data: Uint8Array): RawAttribute[] {
  const list: RawAttribute[] = [];
  let at = 0;
  while (data.length - at >= NLA_HDRLEN) {
    const r = new ByteReader(data, at);
    const length = r.u16();
    const type = r.u16() & NLA_TYPE_MASK;
    if (length < NLA_HDRLEN || at + length > data.length) {
      throw new Error(`malformed netlink attribute: length ${length} at offset ${at} of ${data.length}`);
    }
    list.push({ type, value: data.subarray(at + NLA_HDRLEN, at + length) });
    at += (length + 3) & ~3;
  }
  return list;
}

/** The first attribute of each type, for lookups by type. */
export function attributeMap(data: Uint8Array): Map<number, Uint8Array> {
  const map = new Map<number, Uint8Array>();
  for (const a of decodeAttributes(data)) if (!map.has(a.type)) map.set(a.type, a.value);
  return map;
}

/** Attribute payload readers (host byte order). */
export const read = {
  u8: (v: Uint8Array): number => new ByteReader(v).u8(),
  u16: (v: Uint8Array): number => new ByteReader(v).u16(),
  u32: (v: Uint8Array): number => new ByteReader(v).u32(),
  u64: (v: Uint8Array): number => new ByteReader(v).u64(),
  string: (v: Uint8Array): string => Buffer.from(v).toString("utf8").replace(/\0+$/, ""),
};

/** A generic netlink message's command, version and attribute bytes. */
export function genlPayload(message: NetlinkMessage): { cmd: number; version: number; attributes: Uint8Array } {
  const r = new ByteReader(message.payload);
  const cmd = r.u8();
  const version = r.u8();
  r.skip(2);
  return { cmd, version, attributes: message.payload.subarray(GENL_HDRLEN) };
}

/** The (positive) errno carried by an NLMSG_ERROR message; 0 is the acknowledgement of success. */
export function errorCode(message: NetlinkMessage): number {
  return -new ByteReader(message.payload).i32();
}

export interface GenlFamily {
  readonly id: number;
  readonly version: number;
  readonly maxAttribute: number;
}

/**
 * A blocking generic netlink socket. Requests are answered from inside the kernel's handling of send(), so the
 * replies are already queued when recv() runs; a receive timeout guards against a kernel that never answers.
 */
export class GenericNetlink {
  private seq = Math.floor(Math.random() * 0x7fffffff);
  private readonly buffer = new Uint8Array(RECEIVE_BUFFER_SIZE);

  private constructor(private readonly fd: number) {}

  static open(): GenericNetlink {
    const fd = openSocket(AF_NETLINK, SOCK_RAW, NETLINK_GENERIC);
    try {
      setSocketTimeout(fd, SO_RCVTIMEO, REPLY_TIMEOUT_MS);
    } catch (error) {
      closeFd(fd);
      throw error;
    }
    return new GenericNetlink(fd);
  }

  /**
   * Sends one request and returns the reply messages that came before the acknowledgement. A negative
   * acknowledgement throws a LibcError named `what` carrying the kernel's errno.
   */
  request(family: number, cmd: number, version: number, attributes: readonly Attribute[], what: string): NetlinkMessage[] {
    const seq = ++this.seq;
    sendAll(this.fd, encodeGenlRequest({ family, cmd, version, seq, attributes }));
    const replies: NetlinkMessage[] = [];
    for (;;) {
      const n = receive(this.fd, this.buffer);
      if (n < 0) throw new Error(`${what}: no reply from the kernel within ${REPLY_TIMEOUT_MS / 1000} s`);
      if (n === 0) throw new Error(`${what}: the netlink socket closed`);
      for (const message of decodeMessages(this.buffer.subarray(0, n))) {
        if (message.seq !== seq) continue;
        if (message.type === NLMSG_ERROR) {
          const errno = errorCode(message);
          if (errno !== 0) throw new LibcError(what, errno, `family ${family}, command ${cmd}`);
          return replies;
        }
        if (message.type === NLMSG_DONE) return replies;
        // A copy: the next recv() reuses the buffer the message is a view of.
        if (message.type !== NLMSG_NOOP) replies.push({ ...message, payload: message.payload.slice() });
      }
    }
  }

  /** Looks a family up by name through nlctrl; undefined when the kernel has no such family. */
  resolveFamily(name: string): GenlFamily | undefined {
    let replies: NetlinkMessage[];
    try {
      replies = this.request(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, 1, [nla.string(CTRL_ATTR_FAMILY_NAME, name)], "nlctrl getfamily");
    } catch (error) {
      if (error instanceof LibcError && error.errno === ENOENT) return undefined;
      throw error;
    }
    const reply = replies[0];
    if (reply === undefined) throw new Error(`nlctrl getfamily ${name}: the kernel sent no family`);
    const attrs = attributeMap(genlPayload(reply).attributes);
    const id = attrs.get(CTRL_ATTR_FAMILY_ID);
    if (id === undefined) throw new Error(`nlctrl getfamily ${name}: the reply has no family id`);
    const version = attrs.get(CTRL_ATTR_VERSION);
    const maxAttribute = attrs.get(CTRL_ATTR_MAXATTR);
    return {
      id: read.u16(id),
      version: version ? read.u32(version) : 1,
      maxAttribute: maxAttribute ? read.u32(maxAttribute) : 0,
    };
  }

  close(): void {
    closeFd(this.fd);
  }
}
