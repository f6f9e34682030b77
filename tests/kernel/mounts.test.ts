// Who uses a device: mountinfo parsing (escapes included), swap, and stacked devices, for a device and its partitions.
import { describe, expect, test } from "bun:test";
import { describeUsers, familyMounts, parseMountinfo } from "../../src/engine/kernel/mounts.ts";

const MOUNTINFO = [
  "22 1 259:1 / / rw,relatime shared:1 - ext4 /dev/vda rw",
  "31 22 43:0 / /mnt/usbd rw,relatime shared:12 - ext4 /dev/nbd0 rw",
  "32 22 43:1 /sub /srv/my\\040data rw - xfs /dev/nbd0p1 rw",
  "33 22 43:32 / /mnt/other rw - ext4 /dev/nbd1 rw",
  "",
].join("\n");

const SWAPS = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n/dev/nbd0p2                             partition\t1048572\t\t0\t\t-2\n";

describe("mountinfo", () => {
  test("fields come out with octal escapes undone", () => {
    const entries = parseMountinfo(MOUNTINFO);
    expect(entries).toHaveLength(4);
    expect(entries[2]).toEqual({ device: "43:1", mountPoint: "/srv/my data", source: "/dev/nbd0p1" });
  });
});

describe("device users", () => {
  const nbd0 = { numbers: new Set(["43:0", "43:1", "43:2"]), names: ["nbd0", "nbd0p1", "nbd0p2"], holders: ["/dev/nbd0p1 held by dm-3"] };

  test("mounts of the device and its partitions, swap on a partition, and holders, but not another device", () => {
    expect(describeUsers(nbd0, MOUNTINFO, SWAPS)).toEqual([
      "/dev/nbd0 mounted on /mnt/usbd",
      "/dev/nbd0p1 mounted on /srv/my data",
      "swap on /dev/nbd0p2",
      "/dev/nbd0p1 held by dm-3",
    ]);
  });

  test("an unused device has no users", () => {
    const nbd5 = { numbers: new Set(["43:160"]), names: ["nbd5"], holders: [] };
    expect(describeUsers(nbd5, MOUNTINFO, SWAPS)).toEqual([]);
  });
});

describe("device mounts (what fstrim gets)", () => {
  const nbd0 = { numbers: new Set(["43:0", "43:1", "43:2"]), names: ["nbd0", "nbd0p1", "nbd0p2"], holders: [] };

  test("one mount point per mounted file system of the device and its partitions, first listed wins", () => {
    const bind = `${MOUNTINFO}34 22 43:0 /dir /mnt/bind rw - ext4 /dev/nbd0 rw\n`;
    expect(familyMounts(nbd0, bind).map((m) => m.mountPoint)).toEqual(["/mnt/usbd", "/srv/my data"]);
  });

  test("an unmounted device has none", () => {
    expect(familyMounts({ numbers: new Set(["43:160"]), names: ["nbd5"], holders: [] }, MOUNTINFO)).toEqual([]);
  });
});
