// Generic netlink: the codecs against byte layouts written out from linux/netlink.h and linux/genetlink.h, and a
// real nlctrl family lookup against this machine's kernel.
import { describe, expect, test } from "bun:test";
import {
  CTRL_ATTR_FAMILY_NAME,
  CTRL_CMD_GETFAMILY,
  GENL_ID_CTRL,
  GenericNetlink,
  NLMSG_ERROR,
  attributeMap,
  decodeAttributes,
  decodeMessages,
  encodeAttributes,
  encodeGenlRequest,
  errorCode,
  genlPayload,
  nla,
  read,
} from "../../src/ffi/netlink.ts";

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex");

describe("encoding", () => {
  test("a getfamily request is nlmsghdr + genlmsghdr + one NUL-terminated string attribute", () => {
    const bytes = encodeGenlRequest({
      family: GENL_ID_CTRL,
      cmd: CTRL_CMD_GETFAMILY,
      version: 1,
      seq: 0x01020304,
      attributes: [nla.string(CTRL_ATTR_FAMILY_NAME, "nbd")],
    });
    expect(hex(bytes)).toBe(
      [
        "1c000000", // nlmsg_len 28
        "1000", // nlmsg_type GENL_ID_CTRL
        "0500", // NLM_F_REQUEST | NLM_F_ACK
        "04030201", // nlmsg_seq
        "00000000", // nlmsg_pid (the kernel fills in ours)
        "03010000", // cmd GETFAMILY, version 1, reserved
        "0800", // nla_len 8 = 4 + "nbd\0"
        "0200", // CTRL_ATTR_FAMILY_NAME
        "6e626400",
      ].join(""),
    );
  });

  test("attribute lengths exclude padding, payloads are padded to 4 bytes, nested ones wrap their children", () => {
    const bytes = encodeAttributes([nla.u8(1, 0xaa), nla.nested(7, [nla.nested(1, [nla.u32(1, 5)])]), nla.u64(2, 2 ** 40)]).finish();
    expect(hex(bytes)).toBe(
      [
        "0500", "0100", "aa000000", // u8: length 5, then 3 bytes of padding
        "1000", "0700", // nested, length 16
        "0c00", "0100", // nested item, length 12
        "0800", "0100", "05000000", // u32
        "0c00", "0200", "0000000000010000", // u64 2^40, little-endian
      ].join(""),
    );
    const top = decodeAttributes(bytes);
    expect(top.map((a) => a.type)).toEqual([1, 7, 2]);
    expect(read.u8(top[0]!.value)).toBe(0xaa);
    expect(read.u64(top[2]!.value)).toBe(2 ** 40);
    const item = decodeAttributes(top[1]!.value);
    expect(read.u32(attributeMap(item[0]!.value).get(1)!)).toBe(5);
  });
});

describe("decoding", () => {
  test("an NLMSG_ERROR reply carries the negative errno and the request's header", () => {
    const reply = Buffer.from("24000000" + "0200" + "0001" + "07000000" + "39300000" + "feffffff" + "1c000000100005000700000000000000", "hex");
    const [message, ...rest] = decodeMessages(reply);
    expect(rest).toHaveLength(0);
    expect(message!.type).toBe(NLMSG_ERROR);
    expect(message!.seq).toBe(7);
    expect(message!.pid).toBe(12345);
    expect(errorCode(message!)).toBe(2);
  });

  test("several messages in one datagram are split on their aligned lengths", () => {
    const one = encodeGenlRequest({ family: 30, cmd: 5, version: 1, seq: 1, attributes: [nla.u8(1, 1)] });
    const two = encodeGenlRequest({ family: 30, cmd: 2, version: 1, seq: 2, attributes: [] });
    const messages = decodeMessages(Buffer.concat([one, two]));
    expect(messages.map((m) => [m.seq, genlPayload(m).cmd])).toEqual([
      [1, 5],
      [2, 2],
    ]);
  });

  test("a length that overruns the data is an error, not a silent short read", () => {
    const bytes = encodeGenlRequest({ family: 30, cmd: 5, version: 1, seq: 1, attributes: [nla.u32(1, 1)] });
    expect(() => decodeMessages(bytes.subarray(0, bytes.length - 2))).toThrow(/malformed netlink message/);
    expect(() => decodeAttributes(Buffer.from("0900010001000000", "hex"))).toThrow(/malformed netlink attribute/);
  });
});

describe("nlctrl on this machine's kernel", () => {
  test("the controller family resolves to its well-known id, and an unknown family to undefined", () => {
    const netlink = GenericNetlink.open();
    try {
      const ctrl = netlink.resolveFamily("nlctrl");
      expect(ctrl?.id).toBe(GENL_ID_CTRL);
      expect(ctrl?.version).toBeGreaterThanOrEqual(1);
      expect(netlink.resolveFamily("usbd-nofamily")).toBeUndefined();
    } finally {
      netlink.close();
    }
  });
});
