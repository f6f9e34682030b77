// The nbd netlink messages byte by byte, against layouts written out from linux/nbd-netlink.h and
// linux/genetlink.h (attribute numbers spelled here, not imported, so a wrong engine constant cannot pass).
import { describe, expect, test } from "bun:test";
import { type NetlinkMessage, encodeAttributes, encodeGenlRequest } from "../../src/ffi/netlink.ts";
import {
  connectAttributes,
  disconnectAttributes,
  parseConnectReply,
  parseStatusReply,
  reconfigureAttributes,
  statusAttributes,
} from "../../src/engine/kernel/nbd-netlink.ts";

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex");
const u32 = (type: number, v: number) => `0800${type.toString(16).padStart(2, "0")}00${Buffer.from(new Uint32Array([v]).buffer).toString("hex")}`;
const u64 = (type: number, v: number) => `0c00${type.toString(16).padStart(2, "0")}00${Buffer.from(new BigUint64Array([BigInt(v)]).buffer).toString("hex")}`;

/** A reply message as the kernel would send it: genlmsghdr, then attributes. */
function reply(cmd: number, attributes: string): NetlinkMessage {
  return { type: 30, flags: 0, seq: 1, pid: 0, payload: Buffer.from(`${cmd.toString(16).padStart(2, "0")}010000${attributes}`, "hex") };
}

describe("NBD_CMD_CONNECT", () => {
  test("index, sizes, flags, timeouts, client flags, then each socket nested as SOCKETS > SOCK_ITEM > SOCK_FD", () => {
    const attrs = connectAttributes({
      index: 3,
      sizeBytes: 2 ** 30,
      blockSizeBytes: 4096,
      serverFlags: 0x16d,
      timeoutSeconds: 30,
      deadConnTimeoutSeconds: 60,
      socketFds: [7, 9],
    });
    expect(hex(encodeAttributes(attrs).finish())).toBe(
      [
        u32(1, 3), // NBD_ATTR_INDEX
        u64(2, 2 ** 30), // NBD_ATTR_SIZE_BYTES
        u64(3, 4096), // NBD_ATTR_BLOCK_SIZE_BYTES
        u64(5, 0x16d), // NBD_ATTR_SERVER_FLAGS
        u64(4, 30), // NBD_ATTR_TIMEOUT
        u64(8, 60), // NBD_ATTR_DEAD_CONN_TIMEOUT
        u64(6, 0), // NBD_ATTR_CLIENT_FLAGS: neither DESTROY_ON_DISCONNECT nor DISCONNECT_ON_CLOSE
        "1c00", "0700", // NBD_ATTR_SOCKETS, 28 bytes
        "0c00", "0100", u32(1, 7), // NBD_SOCK_ITEM > NBD_SOCK_FD 7
        "0c00", "0100", u32(1, 9), // NBD_SOCK_ITEM > NBD_SOCK_FD 9
      ].join(""),
    );
  });

  test("no index lets the kernel choose; a backend identifier is a NUL-terminated string (attribute 10)", () => {
    const attrs = connectAttributes({
      sizeBytes: 512,
      blockSizeBytes: 512,
      serverFlags: 1,
      timeoutSeconds: 0,
      deadConnTimeoutSeconds: 0,
      socketFds: [5],
      backend: "ab",
    });
    expect(attrs.map((a) => a.type)).toEqual([2, 3, 5, 4, 8, 6, 7, 10]);
    expect(hex(encodeAttributes(attrs.slice(-1)).finish())).toBe("07000a0061620000");
  });

  test("a whole request carries the family id, REQUEST|ACK and genl version 1", () => {
    const bytes = encodeGenlRequest({ family: 0x21, cmd: 1, version: 1, seq: 9, attributes: disconnectAttributes(0) });
    expect(hex(bytes.subarray(0, 20))).toBe("1c000000" + "2100" + "0500" + "09000000" + "00000000" + "01010000");
  });

  test("the reply's NBD_ATTR_INDEX is the device the kernel configured", () => {
    expect(parseConnectReply([reply(1, u32(1, 12))])).toBe(12);
    expect(() => parseConnectReply([reply(1, "")])).toThrow(/names no device index/);
  });
});

describe("NBD_CMD_RECONFIGURE, DISCONNECT and STATUS", () => {
  test("reconfigure names the device and carries fresh sockets and timeouts", () => {
    const attrs = reconfigureAttributes({ index: 2, socketFds: [11], timeoutSeconds: 0, deadConnTimeoutSeconds: 120, backend: "x" });
    expect(hex(encodeAttributes(attrs).finish())).toBe(
      [u32(1, 2), u64(4, 0), u64(8, 120), u64(6, 0), "1000", "0700", "0c00", "0100", u32(1, 11), "06000a0078000000"].join(""),
    );
  });

  test("disconnect is just the index; status takes an optional index", () => {
    expect(hex(encodeAttributes(disconnectAttributes(4)).finish())).toBe(u32(1, 4));
    expect(statusAttributes()).toEqual([]);
    expect(hex(encodeAttributes(statusAttributes(1)).finish())).toBe(u32(1, 1));
  });

  test("the status reply's DEVICE_LIST > DEVICE_ITEM entries give each device's index and connected flag", () => {
    const item = (index: number, connected: number) => `1400` + `0100` + u32(1, index) + `050002000${connected}000000`;
    const list = item(0, 1) + item(1, 0);
    const message = reply(5, `2c00` + `0900` + list);
    expect(parseStatusReply([message])).toEqual([
      { index: 0, connected: true },
      { index: 1, connected: false },
    ]);
  });
});
