/**
 * The cold section of the objstore bench (bench/objstore.ts): a volume filled and uploaded, then reopened with an
 * empty cache directory for 4 KiB reads that each land on an object not cached yet (the latency of a first read),
 * sequential 1 MiB reads at QD1 with a warm pass after, and at QD8.
 */
import type { Backend } from "./objstore-backends.ts";
import { type DataKind, prng } from "./objstore-data.ts";
import { fx, KiB, log, mb, now, percentile, sizeName } from "./objstore-format.ts";
import { gauge, type Harness, type Loaded, readSequential, writeSequential } from "./objstore-harness.ts";
import type { BackendName } from "./objstore-options.ts";

export interface ColdRow {
  backend: BackendName;
  objsize: number;
  data: DataKind;
  volume: number;
  fillUploadMBs: number;
  compression: number;
  coldQd1MBs: number;
  coldQd1Gets: number;
  coldQd8MBs: number;
  warmMBs: number;
  probeMs: number[];
  probeMedianMs: number;
  probeP90Ms: number;
  probeMaxMs: number;
  objectBytes: number;
}

export async function coldSection(h: Harness, backend: Backend): Promise<Loaded<ColdRow>[]> {
  const o = h.o;
  const rows: Loaded<ColdRow>[] = [];
  for (const objsize of o.coldObjsizes) {
    for (const data of ["2:1", "random"] as DataKind[]) {
      const name = `cold-${objsize / KiB}k-${data === "2:1" ? "c" : "r"}`;
      const place = backend.place(name);
      try {
        const row = await h.measured(async (): Promise<ColdRow> => {
          // Fill and upload.
          const v = await h.open(place, name, { size: o.coldSize, objectSize: objsize });
          const wS = await writeSequential(v.dev, o.coldSize, data);
          const t0 = now();
          await v.dev.flush();
          const upS = (now() - t0) / 1000;
          const compression = gauge(v.dev, "compression ratio");
          const objectBytes = v.store.putBytes;
          await h.close(v);
          // Cold 4 KiB reads, each on a segment not cached yet: latency of the first byte (the whole request).
          const segments = Math.ceil(o.coldSize / objsize);
          const rnd = prng(objsize + (data === "2:1" ? 7 : 0));
          const ids = [...Array(segments).keys()];
          for (let i = ids.length - 1; i > 0; i--) {
            const j = Math.floor(rnd() * (i + 1));
            [ids[i], ids[j]] = [ids[j]!, ids[i]!];
          }
          ids.length = Math.min(o.probes, segments);
          const c1 = await h.open(place, name, {});
          const probeMs: number[] = [];
          for (const id of ids) {
            const off = id * objsize + Math.floor(rnd() * (objsize / (4 * KiB))) * 4 * KiB;
            const t = now();
            const r = c1.dev.read(off, 4 * KiB);
            if (r instanceof Promise) await r;
            probeMs.push(now() - t);
          }
          await h.close(c1);
          // Cold sequential reads at QD1, then a warm pass over the same cache.
          const c2 = await h.open(place, name, {});
          const coldQd1MBs = await readSequential(c2.dev, o.coldSize, 1);
          const coldQd1Gets = c2.store.gets;
          const warmMBs = await readSequential(c2.dev, o.coldSize, 1);
          await h.close(c2);
          // Cold sequential reads at QD8.
          const c3 = await h.open(place, name, {});
          const coldQd8MBs = await readSequential(c3.dev, o.coldSize, 8);
          await h.close(c3);
          return {
            backend: backend.name,
            objsize,
            data,
            volume: o.coldSize,
            fillUploadMBs: mb(o.coldSize, wS + upS),
            compression,
            coldQd1MBs,
            coldQd1Gets,
            coldQd8MBs,
            warmMBs,
            probeMs,
            probeMedianMs: percentile(probeMs, 50),
            probeP90Ms: percentile(probeMs, 90),
            probeMaxMs: Math.max(...probeMs),
            objectBytes,
          };
        });
        rows.push(row);
        log(`cold ${backend.name} ${sizeName(objsize)} ${data}: QD1 ${fx(row.coldQd1MBs)} MB/s (${row.coldQd1Gets} GETs), QD8 ${fx(row.coldQd8MBs)} MB/s, ` +
          `warm ${fx(row.warmMBs)} MB/s, 4K first read median ${fx(row.probeMedianMs, 2)} ms p90 ${fx(row.probeP90Ms, 2)} max ${fx(row.probeMaxMs, 2)}`);
      } finally {
        place.drop();
      }
    }
  }
  return rows;
}
