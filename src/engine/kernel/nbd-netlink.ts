/**
 * The nbd generic netlink family: the attribute lists for CONNECT, RECONFIGURE, DISCONNECT and STATUS (pure, so
 * their bytes are unit-tested against linux/nbd-netlink.h) and a client that sends them and reads the replies.
 */
import { type Attribute, GenericNetlink, type NetlinkMessage, attributeMap, decodeAttributes, genlPayload, nla, read } from "../../ffi/netlink.ts";
import {
  NBD_ATTR,
  NBD_DEVICE_CONNECTED,
  NBD_DEVICE_INDEX,
  NBD_GENL_CMD,
  NBD_GENL_FAMILY,
  NBD_GENL_VERSION,
  NBD_SOCK_FD,
  NBD_SOCK_ITEM,
} from "./constants.ts";

/** Everything NBD_CMD_CONNECT configures. */
export interface ConnectRequest {
  /** A specific /dev/nbdN; absent lets the kernel pick a free device or create a new one. */
  readonly index?: number;
  readonly sizeBytes: number;
  readonly blockSizeBytes: number;
  /** Transmission flags, as a server would send them in the handshake. */
  readonly serverFlags: number;
  /** Seconds before a request counts as timed out; 0 never times out. */
  readonly timeoutSeconds: number;
  /** Seconds the kernel holds I/O waiting for a dead connection to be replaced (RECONFIGURE); 0 fails at once. */
  readonly deadConnTimeoutSeconds: number;
  /** One socket per connection; the kernel takes its own reference to each. */
  readonly socketFds: readonly number[];
  /** Shown in /sys/block/nbdN/backend; RECONFIGURE must then name the same one. */
  readonly backend?: string;
}

export interface ReconfigureRequest {
  readonly index: number;
  readonly socketFds: readonly number[];
  readonly timeoutSeconds: number;
  readonly deadConnTimeoutSeconds: number;
  readonly backend?: string;
}

export interface DeviceStatus {
  readonly index: number;
  readonly connected: boolean;
}

function sockets(fds: readonly number[]): Attribute {
  return nla.nested(
    NBD_ATTR.SOCKETS,
    fds.map((fd) => nla.nested(NBD_SOCK_ITEM, [nla.u32(NBD_SOCK_FD, fd)])),
  );
}

/** What CONNECT and RECONFIGURE both set: timeouts, client flags, the sockets, the backend identifier. */
function connectionAttributes(r: ReconfigureRequest | ConnectRequest): Attribute[] {
  const attrs = [
    nla.u64(NBD_ATTR.TIMEOUT, r.timeoutSeconds),
    nla.u64(NBD_ATTR.DEAD_CONN_TIMEOUT, r.deadConnTimeoutSeconds),
    // No client flags: the device must outlive a disconnect (never delete /dev/nbdN) and survive its last close.
    nla.u64(NBD_ATTR.CLIENT_FLAGS, 0),
    sockets(r.socketFds),
  ];
  if (r.backend !== undefined) attrs.push(nla.string(NBD_ATTR.BACKEND_IDENTIFIER, r.backend));
  return attrs;
}

export function connectAttributes(r: ConnectRequest): Attribute[] {
  return [
    ...(r.index === undefined ? [] : [nla.u32(NBD_ATTR.INDEX, r.index)]),
    nla.u64(NBD_ATTR.SIZE_BYTES, r.sizeBytes),
    nla.u64(NBD_ATTR.BLOCK_SIZE_BYTES, r.blockSizeBytes),
    nla.u64(NBD_ATTR.SERVER_FLAGS, r.serverFlags),
    ...connectionAttributes(r),
  ];
}

export function reconfigureAttributes(r: ReconfigureRequest): Attribute[] {
  return [nla.u32(NBD_ATTR.INDEX, r.index), ...connectionAttributes(r)];
}

export function disconnectAttributes(index: number): Attribute[] {
  return [nla.u32(NBD_ATTR.INDEX, index)];
}

export function statusAttributes(index?: number): Attribute[] {
  return index === undefined ? [] : [nla.u32(NBD_ATTR.INDEX, index)];
}

/** The device index in CONNECT's reply. */
export function parseConnectReply(replies: readonly NetlinkMessage[]): number {
  for (const message of replies) {
    const index = attributeMap(genlPayload(message).attributes).get(NBD_ATTR.INDEX);
    if (index !== undefined) return read.u32(index);
  }
  throw new Error("nbd connect: the kernel's reply names no device index");
}

/** The devices listed in STATUS's reply, in the kernel's order. */
export function parseStatusReply(replies: readonly NetlinkMessage[]): DeviceStatus[] {
  const devices: DeviceStatus[] = [];
  for (const message of replies) {
    const list = attributeMap(genlPayload(message).attributes).get(NBD_ATTR.DEVICE_LIST);
    if (list === undefined) continue;
    for (const item of decodeAttributes(list)) {
      const fields = attributeMap(item.value);
      const index = fields.get(NBD_DEVICE_INDEX);
      const connected = fields.get(NBD_DEVICE_CONNECTED);
      if (index !== undefined) devices.push({ index: read.u32(index), connected: connected !== undefined && read.u8(connected) !== 0 });
    }
  }
  return devices;
}

/** A netlink socket bound to the nbd family. */
export class NbdNetlink {
  private constructor(
    private readonly netlink: GenericNetlink,
    readonly familyId: number,
    /** The highest NBD_ATTR_* this kernel knows. */
    readonly maxAttribute: number,
  ) {}

  /** Opens the family; undefined when the kernel has none (nbd.ko not loaded, or a kernel older than 4.12). */
  static open(): NbdNetlink | undefined {
    const netlink = GenericNetlink.open();
    try {
      const family = netlink.resolveFamily(NBD_GENL_FAMILY);
      if (family === undefined) {
        netlink.close();
        return undefined;
      }
      return new NbdNetlink(netlink, family.id, family.maxAttribute);
    } catch (error) {
      netlink.close();
      throw error;
    }
  }

  /** Whether this kernel knows NBD_ATTR_BACKEND_IDENTIFIER. */
  get supportsBackend(): boolean {
    return this.maxAttribute >= NBD_ATTR.BACKEND_IDENTIFIER;
  }

  /** NBD_CMD_CONNECT; returns the index of the device the kernel configured. */
  connect(request: ConnectRequest): number {
    return parseConnectReply(this.send(NBD_GENL_CMD.CONNECT, connectAttributes(request), "nbd connect"));
  }

  reconfigure(request: ReconfigureRequest): void {
    this.send(NBD_GENL_CMD.RECONFIGURE, reconfigureAttributes(request), "nbd reconfigure");
  }

  /**
   * NBD_CMD_DISCONNECT. The kernel writes NBD_CMD_DISC to each socket before it returns, so call this where the
   * sockets' server ends are still being read (a worker, see blocking.ts), never from the thread serving them.
   */
  disconnect(index: number): void {
    this.send(NBD_GENL_CMD.DISCONNECT, disconnectAttributes(index), "nbd disconnect");
  }

  /** NBD_CMD_STATUS for one device, or all of them. */
  status(index?: number): DeviceStatus[] {
    return parseStatusReply(this.send(NBD_GENL_CMD.STATUS, statusAttributes(index), "nbd status"));
  }

  close(): void {
    this.netlink.close();
  }

  private send(cmd: number, attributes: Attribute[], what: string): NetlinkMessage[] {
    return this.netlink.request(this.familyId, cmd, NBD_GENL_VERSION, attributes, what);
  }
}
