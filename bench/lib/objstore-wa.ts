/**
 * The wa section of the objstore bench (bench/objstore.ts): write amplification of random 4 KiB writes, per object
 * size, spread over the whole volume or clustered in a hot region, on a volume that holds data and on an empty one;
 * bytes uploaded by the remote flush after them over bytes written.
 */
import type { Backend } from "./objstore-backends.ts";
import { fillRandom, prng } from "./objstore-data.ts";
import { fx, KiB, log, MiB, now, sizeName } from "./objstore-format.ts";
import { gauge, type Harness, type Loaded, type Volume, writeSequential } from "./objstore-harness.ts";
import type { BackendName, Options } from "./objstore-options.ts";

export interface WaRow {
  backend: BackendName;
  objsize: number;
  volume: number;
  /** "filled": the volume holds 2:1 data (written and uploaded first); "empty": a new volume. */
  state: "filled" | "empty";
  pattern: "uniform" | "hot";
  writes: number;
  written: number;
  uploaded: number;
  uploadedGauge: number;
  amplification: number;
  puts: number;
  dirtySegments: number;
  flushS: number;
}

/** `n` distinct-or-not 4 KiB offsets: uniform over `[base, base+span)`. */
function offsets(n: number, base: number, span: number, seed: number): number[] {
  const rnd = prng(seed);
  const blocks = span / (4 * KiB);
  return Array.from({ length: n }, () => base + Math.floor(rnd() * blocks) * 4 * KiB);
}

async function randomWrites(v: Volume, backend: BackendName, state: WaRow["state"], pattern: WaRow["pattern"], o: Options, objsize: number): Promise<WaRow> {
  const hotBase = Math.min(o.waSize - o.hot, Math.floor(o.waSize / 4 / o.hot) * o.hot);
  const offs = pattern === "uniform" ? offsets(o.writes, 0, o.waSize, 11) : offsets(o.writes, hotBase, o.hot, 13);
  const payload = fillRandom(new Uint8Array(o.writes * 4 * KiB), 17);
  const before = v.store.snapshot();
  const gaugeBefore = gauge(v.dev, "uploaded");
  for (let i = 0; i < offs.length; i++) {
    const r = v.dev.write(offs[i]!, payload.subarray(i * 4 * KiB, (i + 1) * 4 * KiB));
    if (r instanceof Promise) await r;
  }
  const dirtySegments = gauge(v.dev, "dirty objects");
  const t0 = now();
  await v.dev.flush();
  const flushS = (now() - t0) / 1000;
  const after = v.store.snapshot();
  const uploaded = after.putBytes - before.putBytes;
  const written = o.writes * 4 * KiB;
  return {
    backend,
    objsize,
    volume: o.waSize,
    state,
    pattern,
    writes: o.writes,
    written,
    uploaded,
    uploadedGauge: gauge(v.dev, "uploaded") - gaugeBefore,
    amplification: uploaded / written,
    puts: after.puts - before.puts,
    dirtySegments,
    flushS,
  };
}

export async function waSection(h: Harness, backend: Backend): Promise<Loaded<WaRow>[]> {
  const o = h.o;
  const rows: Loaded<WaRow>[] = [];
  const note = (r: WaRow) =>
    log(`wa ${backend.name} ${sizeName(r.objsize)} ${r.state} ${r.pattern}: ${r.dirtySegments} dirty segments, ${r.puts} PUTs, ` +
      `${fx(r.uploaded / MiB)} MiB uploaded (gauge ${fx(r.uploadedGauge / MiB)}), amplification ${fx(r.amplification)}x, flush ${fx(r.flushS, 2)} s`);
  for (const objsize of o.objsizes) {
    // A volume that holds data: filled with 2:1 data and uploaded, then each pattern and a remote flush.
    {
      const name = `wa-${objsize / KiB}k-f`;
      const place = backend.place(name);
      try {
        const v = await h.open(place, name, { size: o.waSize, objectSize: objsize });
        await writeSequential(v.dev, o.waSize, "2:1");
        await v.dev.flush();
        for (const pattern of ["uniform", "hot"] as const) {
          const r = await h.measured(() => randomWrites(v, backend.name, "filled", pattern, o, objsize));
          rows.push(r);
          note(r);
        }
        await h.close(v);
      } finally {
        place.drop();
      }
    }
    // A new, empty volume per pattern.
    for (const pattern of ["uniform", "hot"] as const) {
      const name = `wa-${objsize / KiB}k-e-${pattern}`;
      const place = backend.place(name);
      try {
        const r = await h.measured(async () => {
          const v = await h.open(place, name, { size: o.waSize, objectSize: objsize });
          const w = await randomWrites(v, backend.name, "empty", pattern, o, objsize);
          await h.close(v);
          return w;
        });
        rows.push(r);
        note(r);
      } finally {
        place.drop();
      }
    }
  }
  return rows;
}
