/**
 * The objstore bench's command line (bench/objstore.ts): its sections, its backends, the help text, and the options
 * parsed and checked from argv.
 */
import { join, resolve } from "node:path";
import type { AesMode, ObjstoreCompression } from "../../src/devices/objstore/layout.ts";
import { GiB, KiB, MiB } from "./objstore-format.ts";
import { SUSTAINED_PATTERNS, type SustainedPattern } from "./objstore-sustained.ts";
import { REMOTE_BACKENDS, type RemoteBackend } from "./remote-stores.ts";

export const SECTIONS = ["cold", "upload", "wa", "seq", "sustained"] as const;
export type Section = (typeof SECTIONS)[number];
export type BackendName = "s3" | "local" | RemoteBackend;

const HELP = `usage: node_modules/.bin/bun bench/objstore.ts [options]

Measures the objstore device in-process against an s3rver on loopback (started here, as a child process) and the
local-directory backend. Sections (all but sustained by default):
  cold    cold reads: a filled volume reopened with an empty cache directory; sequential 1 MiB reads at QD1 and QD8
          (MB/s), a warm pass after, and the latency of 4 KiB reads that each land on a segment not yet cached
  upload  upload throughput: a volume written, then flush() in remote mode timed, per --concurflush value
  wa      write amplification: --writes random 4 KiB writes of random data, then a remote flush, per object size,
          spread over the whole volume and clustered in a --hot region, on a volume that holds data and on an
          empty one; bytes uploaded / bytes written, and PUTs
  seq     the cost of small objects: a sequential write of --seq-size then a remote flush, per object size
  sustained  a filled --sustained-size volume written for twice its size per pattern (4k-random, 64k-random,
          1m-random, 1m-seq), the GC running; bytes uploaded (log, GC, checkpoints) / bytes written, and what the
          store holds at the end, per --sustained-objsizes and --gc-thresholds

Options:
  --sections a,b        sections to run (default ${SECTIONS.join(",")})
  --backends a,b        s3, local, azure, swift, s3api, sftp (default s3,local): azure on azurite (--disableTelemetry), swift, s3api
                        (the s3 backend on Swift's s3api) on Debian's Swift, sftp on openssh-server, all on loopback
  --objsizes a,b        object sizes for wa and seq (default 64KiB,256KiB,1MiB,4MiB,16MiB,64MiB)
  --cold-objsizes a,b   object sizes for cold (default 1MiB,4MiB,16MiB)
  --cold-size SIZE      volume of the cold section (default 256MiB)
  --probes N            cold 4 KiB reads on distinct uncached segments (default 16)
  --upload-size SIZE    volume of the upload section (default 256MiB)
  --upload-objsize SIZE object size of the upload section (default 4MiB, the device's default)
  --concur a,b          --objstore-concurflush values of the upload section (default 1,4,8)
  --wa-size SIZE        volume of the wa section (default 1GiB)
  --writes N            random 4 KiB writes per wa pattern (default 2000)
  --hot SIZE            the clustered pattern's hot region (default 64MiB)
  --seq-size SIZE       sequential write of the seq section (default 256MiB)
  --sustained-size SIZE volume of the sustained section (default 1GiB)
  --patterns a,b        sustained patterns (default 4k-random,64k-random,1m-random,1m-seq)
  --sustained-objsizes a,b  object sizes of the sustained section (default 4MiB)
  --gc-thresholds a,b   --objstore-gc-threshold values of the sustained section (default 0.5)
  --aes MODE            --objstore-aesmode of every volume: aes-gcm (default, the device's), aes-ctr, identity
  --compress ALG        --objstore-compress of every volume: lz4 (default, the device's), gzip, identity
  --scratch DIR         caches, s3rver data and local objects (default /dev/shm/usbd-objstore-bench, tmpfs)
  --out DIR             where the JSON results go (default bench/results)
  --gate CORES          before each configuration wait (max 30 s) until the box is at most CORES busy; 0 = off
                        (default 0.3). During each one the box's CPU not used by this process or the s3rver is
                        recorded as "other load" (> 0.15 cores: noisy)
  --keep                keep the scratch directory

Data: "2:1" is 4 KiB blocks of 2 KiB random bytes then a 2 KiB repeated phrase (lz4 halves it); "random" does
not compress. Both come from fixed seeds. The device runs with --objstore-flush-mode=remote and a flush timer of
an hour, so every upload measured here is one that flush() started.
`;

export interface Options {
  sections: Set<Section>;
  backends: BackendName[];
  objsizes: number[];
  coldObjsizes: number[];
  coldSize: number;
  probes: number;
  uploadSize: number;
  uploadObjsize: number;
  concur: number[];
  waSize: number;
  writes: number;
  hot: number;
  seqSize: number;
  sustainedSize: number;
  patterns: SustainedPattern[];
  sustainedObjsizes: number[];
  thresholds: number[];
  aes: AesMode;
  compress: ObjstoreCompression;
  scratch: string;
  out: string;
  keep: boolean;
  gate: number;
}

export function parseSize(s: string): number {
  const m = /^(\d+)\s*(KiB|K|MiB|M|GiB|G)?$/i.exec(s.trim());
  if (!m) throw new Error(`bad size ${s} (use e.g. 64KiB, 4MiB, 1GiB)`);
  const u = (m[2] ?? "").toUpperCase()[0];
  return Number(m[1]) * (u === "G" ? GiB : u === "M" ? MiB : u === "K" ? KiB : 1);
}

export function parseArgs(argv: string[], repo: string): Options {
  const o: Options = {
    sections: new Set(SECTIONS.filter((x) => x !== "sustained")),
    backends: ["s3", "local"],
    objsizes: [64 * KiB, 256 * KiB, MiB, 4 * MiB, 16 * MiB, 64 * MiB],
    coldObjsizes: [MiB, 4 * MiB, 16 * MiB],
    coldSize: 256 * MiB,
    probes: 16,
    uploadSize: 256 * MiB,
    uploadObjsize: 4 * MiB,
    concur: [1, 4, 8],
    waSize: GiB,
    writes: 2000,
    hot: 64 * MiB,
    seqSize: 256 * MiB,
    sustainedSize: GiB,
    patterns: [...SUSTAINED_PATTERNS],
    sustainedObjsizes: [4 * MiB],
    thresholds: [0.5],
    aes: "aes-gcm",
    compress: "lz4",
    scratch: "/dev/shm/usbd-objstore-bench",
    out: join(repo, "bench/results"),
    keep: false,
    gate: 0.3,
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const eq = arg.indexOf("=");
    const key = eq > 0 ? arg.slice(0, eq) : arg;
    const value = (): string => {
      const v = eq > 0 ? arg.slice(eq + 1) : argv[++i];
      if (v === undefined) throw new Error(`${key} needs a value`);
      return v;
    };
    const list = () => value().split(",").map((s) => s.trim()).filter(Boolean);
    const objsize = (s: string) => {
      const n = parseSize(s);
      if (n < 4 * KiB || (n & (n - 1)) !== 0) throw new Error(`${key}: object sizes are powers of two from 4KiB, not ${s}`);
      return n;
    };
    const int = (min: number) => {
      const n = Number(value());
      if (!Number.isInteger(n) || n < min) throw new Error(`${key} must be an integer >= ${min}`);
      return n;
    };
    switch (key) {
      case "-h":
      case "--help":
        process.stdout.write(HELP);
        process.exit(0);
      case "--sections": {
        const v = list();
        const bad = v.filter((s) => !(SECTIONS as readonly string[]).includes(s));
        if (bad.length || v.length === 0) throw new Error(`--sections takes ${SECTIONS.join(", ")}`);
        o.sections = new Set(v as Section[]);
        break;
      }
      case "--backends": {
        const v = list();
        const known: readonly string[] = ["s3", "local", ...REMOTE_BACKENDS];
        if (v.length === 0 || v.some((b) => !known.includes(b))) throw new Error(`--backends takes ${known.join(", ")}`);
        o.backends = v as BackendName[];
        break;
      }
      case "--objsizes": o.objsizes = list().map(objsize); break;
      case "--cold-objsizes": o.coldObjsizes = list().map(objsize); break;
      case "--cold-size": o.coldSize = parseSize(value()); break;
      case "--probes": o.probes = int(1); break;
      case "--upload-size": o.uploadSize = parseSize(value()); break;
      case "--upload-objsize": o.uploadObjsize = objsize(value()); break;
      case "--concur": o.concur = list().map(Number); if (o.concur.some((n) => !Number.isInteger(n) || n < 1)) throw new Error("--concur takes integers >= 1"); break;
      case "--wa-size": o.waSize = parseSize(value()); break;
      case "--writes": o.writes = int(1); break;
      case "--hot": o.hot = parseSize(value()); break;
      case "--seq-size": o.seqSize = parseSize(value()); break;
      case "--sustained-size": o.sustainedSize = parseSize(value()); break;
      case "--patterns": {
        const v = list();
        if (v.length === 0 || v.some((p) => !(SUSTAINED_PATTERNS as readonly string[]).includes(p))) throw new Error(`--patterns takes ${SUSTAINED_PATTERNS.join(", ")}`);
        o.patterns = v as SustainedPattern[];
        break;
      }
      case "--sustained-objsizes": o.sustainedObjsizes = list().map(objsize); break;
      case "--gc-thresholds": {
        o.thresholds = list().map(Number);
        if (o.thresholds.some((t) => !Number.isFinite(t) || t < 0 || t >= 1)) throw new Error("--gc-thresholds takes fractions from 0 to below 1");
        break;
      }
      case "--aes": {
        const v = value();
        if (v !== "aes-gcm" && v !== "aes-ctr" && v !== "identity") throw new Error("--aes takes aes-gcm, aes-ctr or identity");
        o.aes = v;
        break;
      }
      case "--compress": {
        const v = value();
        if (v !== "lz4" && v !== "gzip" && v !== "identity") throw new Error("--compress takes lz4, gzip or identity");
        o.compress = v;
        break;
      }
      case "--scratch": o.scratch = resolve(value()); break;
      case "--out": o.out = resolve(value()); break;
      case "--keep": o.keep = true; break;
      case "--gate": {
        const v = Number(value());
        if (!Number.isFinite(v) || v < 0) throw new Error("--gate takes cores >= 0");
        o.gate = v;
        break;
      }
      default:
        throw new Error(`unknown option ${arg}\n\n${HELP}`);
    }
  }
  for (const [name, size] of [["--cold-size", o.coldSize], ["--upload-size", o.uploadSize], ["--wa-size", o.waSize], ["--seq-size", o.seqSize]] as const) {
    if (size < MiB || size % MiB !== 0) throw new Error(`${name} must be a whole number of MiB`);
  }
  if (o.hot > o.waSize || o.hot % (4 * KiB) !== 0) throw new Error("--hot must be a multiple of 4KiB within --wa-size");
  return o;
}
