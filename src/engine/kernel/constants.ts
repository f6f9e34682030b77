/**
 * The kernel's NBD control interfaces as numbers: the ioctls of linux/nbd.h, the generic netlink family of
 * linux/nbd-netlink.h, and the block-device ioctls of linux/fs.h the attach path uses.
 */

const IOC_NRBITS = 8;
const IOC_TYPEBITS = 8;
const IOC_SIZEBITS = 14;
const IOC_NRSHIFT = 0;
const IOC_TYPESHIFT = IOC_NRSHIFT + IOC_NRBITS;
const IOC_SIZESHIFT = IOC_TYPESHIFT + IOC_TYPEBITS;
const IOC_DIRSHIFT = IOC_SIZESHIFT + IOC_SIZEBITS;
const IOC_NONE = 0;
const IOC_READ = 2;

/** _IOC from asm-generic/ioctl.h (x86-64, arm64), as an unsigned number. */
function ioc(dir: number, type: number, nr: number, size: number): number {
  return ((dir << IOC_DIRSHIFT) | (type << IOC_TYPESHIFT) | (nr << IOC_NRSHIFT) | (size << IOC_SIZESHIFT)) >>> 0;
}

/** _IO(type, nr): an ioctl with no argument struct. */
export const io = (type: number, nr: number): number => ioc(IOC_NONE, type, nr, 0);
/** _IOR(type, nr, size): an ioctl that fills a `size`-byte argument. */
export const ior = (type: number, nr: number, size: number): number => ioc(IOC_READ, type, nr, size);

/** NBD ioctls: _IO(0xab, n). */
export const NBD_IOCTL = {
  SET_SOCK: io(0xab, 0),
  SET_BLKSIZE: io(0xab, 1),
  SET_SIZE: io(0xab, 2),
  DO_IT: io(0xab, 3),
  CLEAR_SOCK: io(0xab, 4),
  CLEAR_QUE: io(0xab, 5),
  PRINT_DEBUG: io(0xab, 6),
  SET_SIZE_BLOCKS: io(0xab, 7),
  DISCONNECT: io(0xab, 8),
  SET_TIMEOUT: io(0xab, 9),
  SET_FLAGS: io(0xab, 10),
} as const;

/** BLKGETSIZE64: the size of a block device in bytes (u64). */
export const BLKGETSIZE64 = ior(0x12, 114, 8);

/** The block major number of /dev/nbdN devices. */
export const NBD_MAJOR = 43;

/** The generic netlink family, and its commands. */
export const NBD_GENL_FAMILY = "nbd";
export const NBD_GENL_VERSION = 1;
export const NBD_GENL_CMD = {
  CONNECT: 1,
  DISCONNECT: 2,
  RECONFIGURE: 3,
  LINK_DEAD: 4,
  STATUS: 5,
} as const;

/** Top-level attributes (NBD_ATTR_*). */
export const NBD_ATTR = {
  INDEX: 1,
  SIZE_BYTES: 2,
  BLOCK_SIZE_BYTES: 3,
  TIMEOUT: 4,
  SERVER_FLAGS: 5,
  CLIENT_FLAGS: 6,
  SOCKETS: 7,
  DEAD_CONN_TIMEOUT: 8,
  DEVICE_LIST: 9,
  /** Since Linux 5.14; older kernels ignore it (their policy ends at DEVICE_LIST). */
  BACKEND_IDENTIFIER: 10,
} as const;

/** [NBD_ATTR_SOCKETS] holds NBD_SOCK_ITEMs, each holding one NBD_SOCK_FD (u32). */
export const NBD_SOCK_ITEM = 1;
export const NBD_SOCK_FD = 1;
/** [NBD_ATTR_DEVICE_LIST] holds NBD_DEVICE_ITEMs, each with NBD_DEVICE_INDEX (u32) and NBD_DEVICE_CONNECTED (u8). */
export const NBD_DEVICE_ITEM = 1;
export const NBD_DEVICE_INDEX = 1;
export const NBD_DEVICE_CONNECTED = 2;

/** Client flags: delete the device at disconnect; disconnect when the last opener closes it. Neither is used. */
export const NBD_CFLAG_DESTROY_ON_DISCONNECT = 1 << 0;
export const NBD_CFLAG_DISCONNECT_ON_CLOSE = 1 << 1;

/** The largest logical block size the kernel accepts for an NBD device (PAGE_SIZE on x86-64). */
export const KERNEL_MAX_BLOCK_SIZE = 4096;
