/**
 * azurite is only ever started by tests/helpers/azurite-server.ts, always with --disableTelemetry (no traffic off the machine).
 * The objstore device in-process (openObjstoreDevice), against an s3rver on loopback (a process of its own,
 * bench/lib/s3rver-child.ts) and against the local-directory backend: cold reads, upload throughput, write
 * amplification of small random writes per object size, and what small objects cost a sequential write. Prints
 * Markdown tables; raw numbers go to bench/results/objstore-<timestamp>.json. `bun bench/objstore.ts --help` lists
 * the options; docs/BENCHMARKS.md ("The objstore device") explains the method and shows results.
 *
 * The pieces live in bench/lib/objstore-*.ts: options (the flags and --help), harness (volumes and the load
 * accounting), backends, one module per section (cold, upload, wa, seq, sustained-section), report (Markdown).
 */
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { BackendServers } from "./lib/objstore-backends.ts";
import { coldSection } from "./lib/objstore-cold.ts";
import { log } from "./lib/objstore-format.ts";
import { Harness } from "./lib/objstore-harness.ts";
import { parseArgs } from "./lib/objstore-options.ts";
import { loadAverage, markdown, reportHeader, type Results } from "./lib/objstore-report.ts";
import { seqSection } from "./lib/objstore-seq.ts";
import { sustainedSection } from "./lib/objstore-sustained-section.ts";
import { uploadSection } from "./lib/objstore-upload.ts";
import { waSection } from "./lib/objstore-wa.ts";
import { machineFacts } from "./lib/sys.ts";

async function main(): Promise<void> {
  const repo = resolve(import.meta.dir, "..");
  const o = parseArgs(process.argv.slice(2), repo);
  rmSync(o.scratch, { recursive: true, force: true });
  mkdirSync(o.scratch, { recursive: true });
  mkdirSync(o.out, { recursive: true });
  const facts = await machineFacts(repo, o.scratch);
  const loadStart = loadAverage();
  const stamp = facts.date.replace(/[:.]/g, "-").slice(0, 19);
  const resultsPath = join(o.out, `objstore-${stamp}.json`);
  const servers = new BackendServers(o, repo);
  const results: Results = { cold: [], upload: [], wa: [], seq: [], sustained: [] };
  // Saved after every section, so an interrupted or failed run keeps what it measured.
  const save = (extra: Record<string, unknown> = {}) =>
    writeFileSync(resultsPath, JSON.stringify({ facts, options: { ...o, sections: [...o.sections] }, results, ...extra }, null, 1));
  const stop = async () => {
    await servers.stop();
    if (!o.keep) rmSync(o.scratch, { recursive: true, force: true });
  };
  process.on("SIGINT", () => void stop().then(() => process.exit(130)));
  try {
    const h = new Harness(o);
    const backends = await servers.start(h);
    log(`bun ${facts.bun}; ${facts.cpus} CPUs (${facts.cpuModel}); scratch ${o.scratch} (${facts.scratchFs}); results -> ${resultsPath}`);
    for (const backend of backends) {
      if (o.sections.has("cold")) results.cold.push(...(await coldSection(h, backend)));
      save();
      if (o.sections.has("upload")) results.upload.push(...(await uploadSection(h, backend)));
      save();
      if (o.sections.has("wa")) results.wa.push(...(await waSection(h, backend)));
      save();
      if (o.sections.has("seq")) results.seq.push(...(await seqSection(h, backend)));
      save();
      if (o.sections.has("sustained")) results.sustained.push(...(await sustainedSection(h, backend)));
      save();
    }
    const md = markdown(o, results, reportHeader(o, facts, loadStart, results));
    save({ markdown: md });
    process.stdout.write(`\n${md}\n\nraw results: ${resultsPath}\n`);
  } finally {
    await stop();
  }
}

main().catch((e) => {
  process.stderr.write(`bench/objstore: ${(e as Error).stack ?? (e as Error).message}\n`);
  process.exit(1);
});
