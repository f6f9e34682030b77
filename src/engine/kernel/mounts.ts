/**
 * Who is using a block device before we pull it away: mounts (from /proc/self/mountinfo), swap areas
 * (/proc/swaps) and stacked devices (sysfs holders: device-mapper, md), for the device and its partitions.
 */
import { readFileSync, readdirSync } from "node:fs";

export interface MountEntry {
  /** "major:minor" of the mounted device. */
  readonly device: string;
  readonly mountPoint: string;
  readonly source: string;
}

/** mountinfo escapes space, tab, newline and backslash as octal (\040); undo that. */
function unescapeOctal(text: string): string {
  return text.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(Number.parseInt(octal, 8)));
}

/** Parses proc(5) mountinfo: "id parent major:minor root mountpoint options [optional...] - fstype source superopts". */
export function parseMountinfo(text: string): MountEntry[] {
  const entries: MountEntry[] = [];
  for (const line of text.split("\n")) {
    const fields = line.split(" ");
    const separator = fields.indexOf("-");
    if (fields.length < 6 || separator < 0) continue;
    entries.push({ device: fields[2]!, mountPoint: unescapeOctal(fields[4]!), source: unescapeOctal(fields[separator + 2] ?? "") });
  }
  return entries;
}

/** A device and its partitions as sysfs lists them. */
export interface DeviceFamily {
  /** "major:minor" of the whole device and of each partition. */
  readonly numbers: ReadonlySet<string>;
  /** Kernel names: nbd0, nbd0p1, ... */
  readonly names: readonly string[];
  /** Stacked devices (device-mapper, md) holding the device or a partition: "nbd0p1 held by dm-0". */
  readonly holders: readonly string[];
}

function listDir(path: string): string[] {
  try {
    return readdirSync(path);
  } catch {
    return [];
  }
}

function readOr(path: string, fallback: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return fallback;
  }
}

/** nbdN and its partitions (nbdNp1, ...), from sysfs. */
export function deviceFamily(index: number): DeviceFamily {
  const base = `nbd${index}`;
  const dir = `/sys/block/${base}`;
  const partitions = listDir(dir).filter((entry) => entry.startsWith(`${base}p`));
  const numbers = new Set<string>();
  const holders: string[] = [];
  for (const [name, path] of [[base, dir], ...partitions.map((p) => [p, `${dir}/${p}`])] as const) {
    const number = readOr(`${path}/dev`, "").trim();
    if (number !== "") numbers.add(number);
    for (const holder of listDir(`${path}/holders`)) holders.push(`/dev/${name} held by ${holder}`);
  }
  return { numbers, names: [base, ...partitions], holders };
}

/**
 * Everything that uses a device family, one phrase each ("/dev/nbd0p1 mounted on /mnt/data", "swap on
 * /dev/nbd0", "/dev/nbd0 held by dm-0"); empty when nothing does.
 */
export function describeUsers(family: DeviceFamily, mountinfo: string, swaps: string): string[] {
  const users: string[] = [];
  for (const m of parseMountinfo(mountinfo)) {
    if (family.numbers.has(m.device)) users.push(`${m.source || `device ${m.device}`} mounted on ${m.mountPoint}`);
  }
  for (const line of swaps.split("\n").slice(1)) {
    const path = line.split(/\s+/)[0] ?? "";
    if (family.names.some((n) => path === `/dev/${n}`)) users.push(`swap on ${path}`);
  }
  return [...users, ...family.holders];
}

/** What uses /dev/nbdN right now (see describeUsers). */
export function deviceUsers(index: number): string[] {
  return describeUsers(deviceFamily(index), readOr("/proc/self/mountinfo", ""), readOr("/proc/swaps", ""));
}

/**
 * The file systems mounted from a device family, one mount point each (the first one mountinfo lists: a bind
 * mount or a second mount of the same file system adds nothing to trim), in mountinfo order.
 */
export function familyMounts(family: DeviceFamily, mountinfo: string): MountEntry[] {
  const seen = new Set<string>();
  const mounts: MountEntry[] = [];
  for (const m of parseMountinfo(mountinfo)) {
    if (!family.numbers.has(m.device) || seen.has(m.device)) continue;
    seen.add(m.device);
    mounts.push(m);
  }
  return mounts;
}

/** The file systems mounted from /dev/nbdN or its partitions right now (see familyMounts). */
export function deviceMounts(index: number): MountEntry[] {
  return familyMounts(deviceFamily(index), readOr("/proc/self/mountinfo", ""));
}
