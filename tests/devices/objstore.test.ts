// The objstore device through the shared conformance suite: both backends, every compression and encryption mode
// and two object sizes (pairwise, to keep the run short), local and remote flush modes. Reopening goes through the
// store: without a persistent cache, clean segments are dropped at close and fetched again.
import { afterAll, beforeAll } from "bun:test";
import fs from "node:fs";
import path from "node:path";
import type { AesMode, FlushMode, ObjstoreCompression } from "../../src/devices/objstore/layout.ts";
import { MiB, runConformance } from "../conformance/index.ts";
import { startS3Server, type S3Server } from "../helpers/s3-server.ts";
import { backendOptions, objstoreTraits, openObjstoreDevice, tempDir, type Backend } from "./objstore-helpers.ts";

const dir = tempDir("objstore");
let server: S3Server | undefined;
beforeAll(async () => {
  server = await startS3Server();
});
afterAll(async () => {
  await server?.cleanup();
  fs.rmSync(dir, { recursive: true, force: true });
});

interface Combination {
  readonly backend: Backend;
  readonly compression: ObjstoreCompression;
  readonly aesMode: AesMode;
  readonly objectSize: number;
  readonly flushMode: FlushMode;
}

const combinations: Combination[] = [
  { backend: "local", compression: "lz4", aesMode: "aes-gcm", objectSize: 256 * 1024, flushMode: "local" },
  { backend: "local", compression: "gzip", aesMode: "aes-ctr", objectSize: MiB, flushMode: "remote" },
  { backend: "local", compression: "identity", aesMode: "identity", objectSize: 256 * 1024, flushMode: "remote" },
  { backend: "s3", compression: "lz4", aesMode: "aes-gcm", objectSize: MiB, flushMode: "remote" },
  { backend: "s3", compression: "gzip", aesMode: "identity", objectSize: 256 * 1024, flushMode: "local" },
  { backend: "s3", compression: "identity", aesMode: "aes-ctr", objectSize: MiB, flushMode: "local" },
];

const traits = await objstoreTraits();
let count = 0;
for (const c of combinations) {
  let name = "";
  let storeDir = "";
  const label = `objstore (${c.backend}, ${c.compression}, ${c.aesMode}, ${c.objectSize / 1024} KiB objects, ${c.flushMode} flush)`;
  await runConformance(label, {
    traits,
    create() {
      name = `conformance-${count++}`;
      storeDir = path.join(dir, name);
      fs.mkdirSync(storeDir);
      return openObjstoreDevice({
        storeDir,
        storeName: name,
        size: 64 * MiB,
        ...backendOptions(c.backend, path.join(dir, "objects"), server),
        compression: c.compression,
        aesMode: c.aesMode,
        objectSize: c.objectSize,
        flushMode: c.flushMode,
      });
    },
    reopen: () => openObjstoreDevice({ storeDir, storeName: name, ...backendOptions(c.backend, path.join(dir, "objects"), server), flushMode: c.flushMode }),
    cleanup() {
      fs.rmSync(storeDir, { recursive: true, force: true });
    },
  });
}
