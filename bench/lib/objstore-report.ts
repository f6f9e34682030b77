/**
 * The objstore bench's report (bench/objstore.ts): the rows every section produced, the header that says where and
 * how they were measured and how loaded the box was meanwhile, and the Markdown tables.
 */
import { readFileSync } from "node:fs";
import type { ColdRow } from "./objstore-cold.ts";
import { fx, MiB, mb, percentile, sizeName } from "./objstore-format.ts";
import type { Load, Loaded } from "./objstore-harness.ts";
import type { Options } from "./objstore-options.ts";
import { PUT_PRICE_PER_1000, type SeqRow } from "./objstore-seq.ts";
import type { SustainedRow } from "./objstore-sustained.ts";
import type { UploadRow } from "./objstore-upload.ts";
import type { WaRow } from "./objstore-wa.ts";
import { REMOTE_DESCRIPTIONS } from "./remote-stores.ts";
import { NOISY_CORES } from "./report.ts";
import type { MachineFacts } from "./sys.ts";

export type Results = { cold: Loaded<ColdRow>[]; upload: Loaded<UploadRow>[]; wa: Loaded<WaRow>[]; seq: Loaded<SeqRow>[]; sustained: Loaded<SustainedRow>[] };

/** The 1, 5 and 15 minute load averages from /proc/loadavg, for the header's "at start" and "at end". */
export function loadAverage(): string {
  return readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ");
}

/** The lines above the tables: the machine, the backends and settings, the load average and the other load. */
export function reportHeader(o: Options, facts: MachineFacts, loadStart: string, results: Results): string[] {
  return [
    `### The objstore device in-process (bench/objstore.ts), ${facts.date.slice(0, 10)}`,
    "",
    `- machine: ${facts.cpus} x ${facts.cpuModel}, ${facts.memoryGiB} GiB RAM, Linux ${facts.kernel}; bun ${facts.bun}; ` +
      `usbd-tui at ${facts.gitCommit}${facts.gitDirty ? ` + uncommitted changes (diff ${facts.gitDiffHash})` : ""}`,
    `- backends: ${o.backends.map((n) => (n === "s3" ? "s3rver 3.7 on 127.0.0.1 (own process, data on the scratch fs)" : n === "local" ? "local directory" : REMOTE_DESCRIPTIONS[n])).join("; ")}; ` +
      `scratch ${o.scratch} (${facts.scratchFs}); --objstore-aesmode=${o.aes} --objstore-compress=${o.compress}, flush mode remote; no CPU pinning`,
    `- load average at start ${loadStart}, at end ${loadAverage()}`,
    loadLine(results),
  ];
}

/** One line on the load the measurements shared the box with. */
function loadLine(r: Results): string {
  const all: Array<{ what: string; load: Load }> = [
    ...r.cold.map((c) => ({ what: `cold ${c.backend} ${sizeName(c.objsize)} ${c.data}`, load: c.load })),
    ...r.upload.map((u) => ({ what: `upload ${u.backend} ${u.data} x${u.concurrency}`, load: u.load })),
    ...r.wa.map((w) => ({ what: `wa ${w.backend} ${sizeName(w.objsize)} ${w.state} ${w.pattern}`, load: w.load })),
    ...r.seq.map((s) => ({ what: `seq ${s.backend} ${sizeName(s.objsize)}`, load: s.load })),
    ...r.sustained.map((s) => ({ what: `sustained ${s.backend} ${s.pattern} ${sizeName(s.objsize)} ${s.threshold}`, load: s.load })),
  ];
  if (all.length === 0) return "- no measurements";
  const other = all.map((a) => Math.max(0, a.load.otherCores));
  const noisy = all.filter((a) => a.load.otherCores > NOISY_CORES);
  return `- other load (box CPU not used by this process or the s3rver) during the ${all.length} measurements: median ` +
    `${fx(percentile(other, 50), 2)}, max ${fx(Math.max(...other), 2)} cores; ` +
    (noisy.length ? `**noisy (> ${NOISY_CORES} cores): ${noisy.map((n) => `${n.what} (${fx(n.load.otherCores, 2)})`).join(", ")}**` : "none noisy");
}

export function markdown(o: Options, r: Results, header: string[]): string {
  const L: string[] = [...header, ""];
  const row = (cells: (string | number)[]) => L.push(`| ${cells.join(" | ")} |`);
  if (r.cold.length) {
    L.push(`#### Cold reads (${sizeName(o.coldSize)} volume, reopened with an empty cache directory)`, "");
    row(["backend", "object size", "data", "compression", "cold seq 1M QD1", "GETs", "cold seq 1M QD8", "warm seq 1M QD1", "cold 4K read median", "p90", "max"]);
    L.push("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (const c of r.cold) {
      row([c.backend, sizeName(c.objsize), c.data, `${fx(c.compression, 2)}`, `${fx(c.coldQd1MBs, 0)} MB/s`, c.coldQd1Gets, `${fx(c.coldQd8MBs, 0)} MB/s`,
        `${fx(c.warmMBs, 0)} MB/s`, `${fx(c.probeMedianMs, 2)} ms`, `${fx(c.probeP90Ms, 2)} ms`, `${fx(c.probeMaxMs, 2)} ms`]);
    }
    L.push("");
  }
  if (r.upload.length) {
    L.push(`#### Upload throughput (${sizeName(o.uploadSize)} written, then flush() in remote mode; ${sizeName(o.uploadObjsize)} objects)`, "");
    row(["backend", "data", "concurflush", "plaintext", "object bytes", "PUTs", "compression", "flush time", "local write (before flush)"]);
    L.push("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for (const u of r.upload) {
      row([u.backend, u.data, u.concurrency, `${fx(u.plainMBs, 0)} MB/s`, `${fx(u.objectMBs, 0)} MB/s`, u.puts, fx(u.compression, 2), `${fx(u.flushS, 2)} s`, `${fx(u.writeMBs, 0)} MB/s`]);
    }
    L.push("");
  }
  if (r.wa.length) {
    L.push(`#### Write amplification: ${o.writes} random 4 KiB writes (random data), then one remote flush; ${sizeName(o.waSize)} volume`, "");
    L.push(`uniform = over the whole volume; hot = within a ${sizeName(o.hot)} region. filled = the volume holds 2:1 data; ` +
      "empty = a new volume (only the written blocks are non-zero).", "");
    const backends = [...new Set(r.wa.map((w) => w.backend))];
    for (const be of backends) {
      const rows = r.wa.filter((w) => w.backend === be);
      if (backends.length > 1) L.push(`${be}:`, "");
      row(["object size", "filled uniform: PUTs", "MiB up", "amplification", "filled hot: PUTs", "MiB up", "amplification",
        "empty uniform: amplification", "empty hot: amplification", "flush (filled uniform)"]);
      L.push("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
      for (const objsize of o.objsizes) {
        const get = (state: WaRow["state"], pattern: WaRow["pattern"]) => rows.find((w) => w.objsize === objsize && w.state === state && w.pattern === pattern);
        const fu = get("filled", "uniform");
        const fh = get("filled", "hot");
        const eu = get("empty", "uniform");
        const eh = get("empty", "hot");
        if (!fu && !fh && !eu && !eh) continue;
        row([sizeName(objsize), fu?.puts ?? "-", fx((fu?.uploaded ?? NaN) / MiB), `${fx(fu?.amplification ?? NaN)}x`,
          fh?.puts ?? "-", fx((fh?.uploaded ?? NaN) / MiB), `${fx(fh?.amplification ?? NaN)}x`,
          `${fx(eu?.amplification ?? NaN, 2)}x`, `${fx(eh?.amplification ?? NaN, 2)}x`, `${fx(fu?.flushS ?? NaN, 2)} s`]);
      }
      L.push("");
    }
  }
  if (r.seq.length) {
    L.push(`#### The cost of small objects: ${sizeName(o.seqSize)} sequential write (2:1 data) + remote flush`, "");
    row(["backend", "object size", "write+flush", "flush time", "PUTs", "PUTs per GiB", "PUT cost per GiB written"]);
    L.push("|---|---:|---:|---:|---:|---:|---:|");
    for (const s of r.seq) {
      row([s.backend, sizeName(s.objsize), `${fx(s.mbs, 0)} MB/s`, `${fx(s.flushS, 2)} s`, s.puts, fx(s.putsPerGiB, 0), `$${s.dollarsPerGiB.toFixed(4)}`]);
    }
    L.push("");
  }
  if (r.sustained.length) {
    L.push(`#### Sustained writes: a filled ${sizeName(o.sustainedSize)} volume written for twice its size (incompressible data), GC running`, "");
    row(["backend", "pattern", "object size", "GC threshold", "amplification", "of it GC copies", "checkpoints", "GC downloads", "store / volume", "live ratio", "PUTs", "MB/s"]);
    L.push("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (const s of r.sustained) {
      row([s.backend, s.pattern, sizeName(s.objsize), s.threshold, `**${fx(s.amplification, 2)}x**`, `${fx(s.gcBytes / MiB, 0)} MiB`, `${fx(s.checkpointBytes / MiB, 1)} MiB`,
        `${fx(s.downloaded / MiB, 0)} MiB`, `${fx(s.spaceOverhead, 2)}x`, fx(s.liveRatio, 2), s.puts, fx(mb(s.written, s.seconds), 0)]);
    }
    L.push("", "The map at the end of each run, and a cold open of the result (an empty cache directory):", "");
    row(["pattern", "object size", "GC threshold", "extents", "map in memory", "catalog file", "checkpoint", "cold open", "GETs"]);
    L.push("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (const s of r.sustained) {
      row([s.pattern, sizeName(s.objsize), s.threshold, s.extents, `${fx(s.mapMemory / MiB, 1)} MiB`, `${fx(s.catalogBytes / MiB, 1)} MiB`, `${fx(s.checkpointSize / MiB, 1)} MiB`, `${fx(s.coldOpenS, 2)} s`, s.coldOpenGets]);
    }
    L.push("");
  }
  L.push(
    "MB/s = 10^6 bytes per second of plaintext (volume bytes) unless said otherwise; object bytes = what the store " +
      "received (header, lz4, AES-GCM tag). amplification = object bytes uploaded / bytes written. PUT cost at " +
      `$${PUT_PRICE_PER_1000} per 1000 PUTs (AWS S3 Standard). The cold 4K latency is that of the whole read: a GET of ` +
      "the segment's object, its decode, and its bytes written into the cache before the read returns.",
  );
  return L.join("\n");
}
