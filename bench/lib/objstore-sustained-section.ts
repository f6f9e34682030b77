/**
 * The sustained section of the objstore bench (bench/objstore.ts): one run of objstore-sustained.ts per pattern,
 * object size and GC threshold, each on a fresh place of the backend.
 */
import type { Backend } from "./objstore-backends.ts";
import { pool } from "./objstore-data.ts";
import { KiB, log } from "./objstore-format.ts";
import type { Harness, Loaded } from "./objstore-harness.ts";
import { sustained, type SustainedRow } from "./objstore-sustained.ts";

export async function sustainedSection(h: Harness, backend: Backend): Promise<Loaded<SustainedRow>[]> {
  const o = h.o;
  const rows: Loaded<SustainedRow>[] = [];
  const data = pool("random");
  for (const pattern of o.patterns) {
    for (const objsize of o.sustainedObjsizes) {
      for (const threshold of o.thresholds) {
        const name = `sus-${pattern}-${objsize / KiB}k-${Math.round(threshold * 100)}`;
        const place = backend.place(name);
        try {
          rows.push(
            await h.measured(() =>
              sustained(
                async (extra) => {
                  const v = await h.open(place, name, extra);
                  return { dev: v.dev, store: v.store, close: () => h.close(v) };
                },
                { backend: backend.name, pattern, objsize, threshold, volume: o.sustainedSize, data, log },
              ),
            ),
          );
        } finally {
          place.drop();
        }
      }
    }
  }
  return rows;
}
