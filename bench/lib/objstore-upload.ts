/**
 * The upload section of the objstore bench (bench/objstore.ts): a volume written, then flush() in remote mode
 * timed, per --concurflush value and kind of data; plaintext and object bytes per second, and PUTs.
 */
import type { Backend } from "./objstore-backends.ts";
import type { DataKind } from "./objstore-data.ts";
import { fx, log, mb, now } from "./objstore-format.ts";
import { gauge, type Harness, type Loaded, writeSequential } from "./objstore-harness.ts";
import type { BackendName } from "./objstore-options.ts";

export interface UploadRow {
  backend: BackendName;
  objsize: number;
  data: DataKind;
  concurrency: number;
  volume: number;
  writeMBs: number;
  flushS: number;
  plainMBs: number;
  objectMBs: number;
  puts: number;
  compression: number;
}

export async function uploadSection(h: Harness, backend: Backend): Promise<Loaded<UploadRow>[]> {
  const o = h.o;
  const rows: Loaded<UploadRow>[] = [];
  for (const data of ["2:1", "random"] as DataKind[]) {
    for (const concurrency of o.concur) {
      const name = `up-${concurrency}-${data === "2:1" ? "c" : "r"}`;
      const place = backend.place(name);
      try {
        const row = await h.measured(async (): Promise<UploadRow> => {
          const v = await h.open(place, name, { size: o.uploadSize, objectSize: o.uploadObjsize, concurrency });
          const before = v.store.snapshot();
          const wS = await writeSequential(v.dev, o.uploadSize, data);
          const t0 = now();
          await v.dev.flush();
          const flushS = (now() - t0) / 1000;
          const after = v.store.snapshot();
          const r: UploadRow = {
            backend: backend.name,
            objsize: o.uploadObjsize,
            data,
            concurrency,
            volume: o.uploadSize,
            writeMBs: mb(o.uploadSize, wS),
            flushS,
            plainMBs: mb(o.uploadSize, flushS),
            objectMBs: mb(after.putBytes - before.putBytes, flushS),
            puts: after.puts - before.puts,
            compression: gauge(v.dev, "compression ratio"),
          };
          await h.close(v);
          return r;
        });
        rows.push(row);
        log(`upload ${backend.name} ${data} concurflush ${concurrency}: ${fx(row.plainMBs)} MB/s plaintext, ${fx(row.objectMBs)} MB/s objects, ` +
          `${row.puts} PUTs, flush ${fx(row.flushS, 2)} s, compression ${fx(row.compression, 2)}`);
      } finally {
        place.drop();
      }
    }
  }
  return rows;
}
