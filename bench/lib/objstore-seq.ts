/**
 * The seq section of the objstore bench (bench/objstore.ts): what small objects cost a sequential write, per object
 * size: the write and the remote flush after it, the PUTs it took, and what they cost at S3's request price.
 */
import type { Backend } from "./objstore-backends.ts";
import { fx, GiB, KiB, log, mb, now, sizeName } from "./objstore-format.ts";
import { type Harness, type Loaded, writeSequential } from "./objstore-harness.ts";
import type { BackendName } from "./objstore-options.ts";

/** AWS S3 Standard, us-east-1: $0.005 per 1000 PUT (and COPY, POST, LIST) requests. */
export const PUT_PRICE_PER_1000 = 0.005;

export interface SeqRow {
  backend: BackendName;
  objsize: number;
  volume: number;
  writeS: number;
  flushS: number;
  mbs: number;
  puts: number;
  uploaded: number;
  putsPerGiB: number;
  dollarsPerGiB: number;
}

export async function seqSection(h: Harness, backend: Backend): Promise<Loaded<SeqRow>[]> {
  const o = h.o;
  const rows: Loaded<SeqRow>[] = [];
  for (const objsize of o.objsizes) {
    const name = `seq-${objsize / KiB}k`;
    const place = backend.place(name);
    try {
      const row = await h.measured(async (): Promise<SeqRow> => {
        const v = await h.open(place, name, { size: o.seqSize, objectSize: objsize });
        const before = v.store.snapshot();
        const writeS = await writeSequential(v.dev, o.seqSize, "2:1");
        const t0 = now();
        await v.dev.flush();
        const flushS = (now() - t0) / 1000;
        const after = v.store.snapshot();
        await h.close(v);
        const puts = after.puts - before.puts;
        return {
          backend: backend.name,
          objsize,
          volume: o.seqSize,
          writeS,
          flushS,
          mbs: mb(o.seqSize, writeS + flushS),
          puts,
          uploaded: after.putBytes - before.putBytes,
          putsPerGiB: (puts * GiB) / o.seqSize,
          dollarsPerGiB: ((puts * GiB) / o.seqSize / 1000) * PUT_PRICE_PER_1000,
        };
      });
      rows.push(row);
      log(`seq ${backend.name} ${sizeName(objsize)}: ${fx(row.mbs)} MB/s write+flush (flush ${fx(row.flushS, 2)} s), ${row.puts} PUTs`);
    } finally {
      place.drop();
    }
  }
  return rows;
}
