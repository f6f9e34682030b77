// Shutting down with the object store unreachable: the daemon says in one line how much was not uploaded, where it
// is kept and that it goes up at the next start, and exits 4 (not 0); the next start uploads it and exits 0. Also:
// a new volume says "created new volume", a reopened one "reopened volume", and a generated key is announced.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { gauge, statsWhere } from "../clients/daemon-stats.ts";
import { removeDir, run, startDaemon, tempDir } from "../clients/helpers.ts";
import { type S3Server, s3ServerConfigJson, startS3Server } from "../helpers/s3-server.ts";

describe("objstore: quitting while the store is down", () => {
  let s3: S3Server;
  let dir: string;
  beforeAll(async () => {
    s3 = await startS3Server();
    dir = tempDir("quit-store-down");
  });
  afterAll(async () => {
    await s3.cleanup();
    removeDir(dir);
  });

  test("exit 4 with one line naming the bytes, the cache file and the next start; the next start uploads them (exit 0)", async () => {
    const args = ["--objstore-cfg", s3ServerConfigJson(s3), "--objstore-aesmode=identity", "--objstore-flushevery=1h", "--control", "none"];
    const first = await startDaemon({ devType: "objstore", size: "64MiB", storeDir: dir, storeName: "vol", extraArgs: args });
    expect(first.stderr()).toContain("created new volume vol in s3 bucket");
    await run(["qemu-io", "-f", "raw", "-c", "write -P 0x77 0 8M", first.uri]);
    await s3.stop();
    try {
      first.proc.kill("SIGTERM");
      expect(await first.proc.exited).toBe(4);
      const lines = first.stderr().split("\n").filter((l) => l.includes("not in the store yet"));
      expect(lines.length).toBeGreaterThanOrEqual(1);
      // The first 4 MiB object is full, so it is sealed and its upload starts at once: whether it went up before the
      // store stopped is a race, so 4 or 8 MiB are left; never 0, never more than was written.
      expect(first.stderr()).toMatch(new RegExp(`[48] MiB written but not in the store yet: kept in ${join(dir, "vol.objstore.cache")}; it goes up to s3 bucket \\\\"usbd\\\\" at ${s3.endpoint.replaceAll(".", "\\.")} at the next start`));
    } finally {
      first.kill();
      await s3.restart();
    }

    const second = await startDaemon({ devType: "objstore", size: "", storeDir: dir, storeName: "vol", statsIntervalS: 0.5, extraArgs: args });
    expect(second.stderr()).toContain("reopened volume vol in s3 bucket");
    await statsWhere(second, (l) => gauge(l, "dirty objects") === 0, 20_000, "with nothing dirty");
    await second.stop();
  }, 60_000);

  test("a key generated for a new encrypted volume is announced with its path and the warning to keep a copy", async () => {
    const keyDir = join(dir, "keyed");
    const daemon = await startDaemon({ devType: "objstore", size: "16MiB", storeDir: keyDir, storeName: "secret", extraArgs: ["--objstore-cfg", s3ServerConfigJson(s3), "--control", "none"] });
    try {
      expect(daemon.stderr()).toContain(`generated a new key for volume secret at ${join(keyDir, "key.aes")} (mode 0600); keep a copy: without it the volume cannot be read`);
      expect(daemon.stderr()).toMatch(/level=warn msg="generated a new key/);
    } finally {
      await daemon.stop();
    }
  });
});

describe("file and dedup stores say whether they were created or reopened", () => {
  test("a typo in --store-name shows as a new volume", async () => {
    const dir = tempDir("opened");
    try {
      for (const devType of ["file", "dedup"] as const) {
        const a = await startDaemon({ devType, size: "16MiB", storeDir: dir, storeName: `s-${devType}`, extraArgs: ["--control", "none"] });
        expect(a.stderr()).toContain("created new volume");
        await a.stop();
        const b = await startDaemon({ devType, size: "", storeDir: dir, storeName: `s-${devType}`, extraArgs: ["--control", "none"] });
        expect(b.stderr()).toContain("reopened volume");
        await b.stop();
      }
    } finally {
      removeDir(dir);
    }
  }, 60_000);
});
