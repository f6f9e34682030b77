/**
 * azurite is only ever started by tests/helpers/azurite-server.ts, always with --disableTelemetry (no traffic off the machine).
 * The objstore device in-process (openObjstoreDevice), against an s3rver on loopback (a process of its own,
 * bench/lib/s3rver-child.ts) and against the local-directory backend: cold reads, upload throughput, write
 * amplification of small random writes per object size, and what small objects cost a sequential write. Prints
 * Markdown tables; raw numbers go to bench/results/objstore-<timestamp>.json. `bun bench/objstore.ts --help` lists
 * the options; docs/BENCHMARKS.md ("The objstore device") explains the method and shows results.
 */
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { openObjstoreDevice, type ObjstoreDevice, type ObjstoreDeviceOptions } from "../src/devices/objstore/index.ts";
import type { AesMode, ObjstoreCompression } from "../src/devices/objstore/layout.ts";
import { openObjectStore, parseObjectStoreConfig } from "../src/devices/objstore/store/config.ts";
import type { ByteRange, CreateResult, GetResult, ObjectInfo, ObjectStore } from "../src/devices/objstore/store/types.ts";
import { REMOTE_BACKENDS, REMOTE_DESCRIPTIONS, RemoteStores, type RemoteBackend } from "./lib/remote-stores.ts";
import { type S3Child, startS3Child } from "./lib/s3rver-child.ts";
import { SUSTAINED_PATTERNS, sustained, type SustainedPattern, type SustainedRow } from "./lib/objstore-sustained.ts";
import { coresBusy, machineFacts, processCpuSeconds, quietGate, sampleCpu } from "./lib/sys.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
/** AWS S3 Standard, us-east-1: $0.005 per 1000 PUT (and COPY, POST, LIST) requests. */
const PUT_PRICE_PER_1000 = 0.005;

const SECTIONS = ["cold", "upload", "wa", "seq", "sustained"] as const;
type Section = (typeof SECTIONS)[number];
type BackendName = "s3" | "local" | RemoteBackend;
type DataKind = "2:1" | "random";

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
  --backends a,b        s3, local, azure, swift, s3api, sftp (default s3,local): azure on azurite, swift and s3api
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

interface Options {
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

function parseSize(s: string): number {
  const m = /^(\d+)\s*(KiB|K|MiB|M|GiB|G)?$/i.exec(s.trim());
  if (!m) throw new Error(`bad size ${s} (use e.g. 64KiB, 4MiB, 1GiB)`);
  const u = (m[2] ?? "").toUpperCase()[0];
  return Number(m[1]) * (u === "G" ? GiB : u === "M" ? MiB : u === "K" ? KiB : 1);
}

function parseArgs(argv: string[], repo: string): Options {
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

// ---------------------------------------------------------------------------------------------------------------
// Data, randomness, small helpers

/** mulberry32: a small seeded PRNG, so every run writes the same offsets and bytes. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function fillRandom(out: Uint8Array, seed: number): Uint8Array {
  const next = prng(seed);
  const words = new Uint32Array(out.buffer, out.byteOffset, out.length >>> 2);
  for (let i = 0; i < words.length; i++) words[i] = (next() * 4294967296) >>> 0;
  return out;
}

const PHRASE = new TextEncoder().encode("usbd-tui objstore bench: the second half of every 4 KiB block repeats this.\n");

/**
 * `bytes` of data of the given kind. "random": incompressible. "2:1": every 4 KiB block is 2 KiB of random bytes
 * then 2 KiB of a repeated phrase, which lz4 packs to almost nothing (about 2:1 overall).
 */
function makeData(kind: DataKind, bytes: number, seed: number): Uint8Array {
  const out = fillRandom(new Uint8Array(bytes), seed);
  if (kind === "2:1") {
    for (let block = 0; block < bytes; block += 4 * KiB) {
      for (let at = block + 2 * KiB; at < block + 4 * KiB; at += PHRASE.length) out.set(PHRASE.subarray(0, Math.min(PHRASE.length, block + 4 * KiB - at)), at);
    }
  }
  return out;
}

/** A pool of data written over and over (lz4 sees 64 KiB at a time, so a 16 MiB pool repeating changes nothing). */
const POOL_BYTES = 16 * MiB;
const pools = new Map<DataKind, Uint8Array>();
function pool(kind: DataKind): Uint8Array {
  let p = pools.get(kind);
  if (!p) {
    p = makeData(kind, POOL_BYTES, kind === "random" ? 1 : 2);
    pools.set(kind, p);
  }
  return p;
}

function percentile(xs: readonly number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return Number.NaN;
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

const mb = (bytes: number, seconds: number) => bytes / seconds / 1e6;
const sizeName = (n: number) => (n >= GiB && n % GiB === 0 ? `${n / GiB} GiB` : n >= MiB && n % MiB === 0 ? `${n / MiB} MiB` : `${n / KiB} KiB`);
const fx = (v: number, d = 1) => (Number.isFinite(v) ? v.toFixed(d) : "-");
const now = () => performance.now();

function log(msg: string): void {
  process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

// ---------------------------------------------------------------------------------------------------------------
// A store that counts its requests

class CountingStore implements ObjectStore {
  puts = 0;
  putBytes = 0;
  gets = 0;
  getBytes = 0;
  heads = 0;
  deletes = 0;
  lists = 0;
  constructor(private readonly inner: ObjectStore) {}
  get description(): string {
    return this.inner.description;
  }
  prepare(): Promise<void> {
    return this.inner.prepare();
  }
  async put(key: string, body: Uint8Array): Promise<{ readonly etag: string }> {
    this.puts++;
    this.putBytes += body.length;
    return this.inner.put(key, body);
  }
  async createIfAbsent(key: string, body: Uint8Array): Promise<CreateResult> {
    this.puts++;
    this.putBytes += body.length;
    return this.inner.createIfAbsent(key, body);
  }
  async get(key: string, range?: ByteRange): Promise<GetResult | undefined> {
    this.gets++;
    const r = await this.inner.get(key, range);
    if (r) this.getBytes += r.body.length;
    return r;
  }
  head(key: string): Promise<ObjectInfo | undefined> {
    this.heads++;
    return this.inner.head(key);
  }
  delete(key: string): Promise<void> {
    this.deletes++;
    return this.inner.delete(key);
  }
  list(prefix: string): AsyncIterable<ObjectInfo> {
    this.lists++;
    return this.inner.list(prefix);
  }
  close(): void {
    this.inner.close();
  }
  snapshot() {
    return { puts: this.puts, putBytes: this.putBytes, gets: this.gets, getBytes: this.getBytes, deletes: this.deletes };
  }
}

function gauge(dev: ObjstoreDevice, name: string): number {
  return dev.stats().gauges.find((g) => g.name === name)?.value ?? Number.NaN;
}

// ---------------------------------------------------------------------------------------------------------------
// Backends and volumes

/** A fixed key so a volume reopens from another (empty) cache directory; the key file would live in the old one. */
const AES_KEY = `key:${"5a".repeat(32)}`;

interface Backend {
  readonly name: BackendName;
  /** A fresh place for one volume (its own bucket or directory), and how to drop it afterwards. */
  place(tag: string): { kind: string; config: string; drop(): void };
}

interface Volume {
  readonly dev: ObjstoreDevice;
  readonly store: CountingStore;
}

/** Load of one configuration's run: the gate before it, and the box's CPU that neither this process nor the s3rver used. */
interface Load {
  gateWaitedS: number;
  gateLoad: number;
  otherCores: number;
}

const NOISY_CORES = 0.15;
type Loaded<T> = T & { load: Load };

class Bench {
  private seq = 0;
  /** The s3rver child's pid, whose CPU is ours, not other load. */
  s3Pid: number | undefined;
  constructor(readonly o: Options) {}

  /** Runs one configuration after the quiet gate, and says how much other work shared the box meanwhile. */
  async measured<T extends object>(fn: () => Promise<T>): Promise<T & { load: Load }> {
    const gate = this.o.gate > 0 ? await quietGate(this.o.gate, 0.5, 30) : { waited: 0, load: Number.NaN };
    const own = () => processCpuSeconds(process.pid) + (this.s3Pid === undefined ? 0 : processCpuSeconds(this.s3Pid));
    const cpu0 = own();
    const box0 = sampleCpu();
    const t0 = now();
    const value = await fn();
    const seconds = (now() - t0) / 1000;
    const otherCores = coresBusy(box0, sampleCpu(), seconds).box - (own() - cpu0) / seconds;
    return { ...value, load: { gateWaitedS: gate.waited, gateLoad: gate.load, otherCores } };
  }

  /** Opens a volume of `backend` at `place` with a cache in a new directory; defaults: remote flush, no timer. */
  async open(place: { kind: string; config: string }, name: string, extra: Partial<ObjstoreDeviceOptions>): Promise<Volume & { cacheDir: string }> {
    const cacheDir = join(this.o.scratch, "caches", `${name}-${++this.seq}`);
    mkdirSync(cacheDir, { recursive: true });
    const store = new CountingStore(openObjectStore(place.kind, parseObjectStoreConfig(place.config), { localPath: join(cacheDir, "objects") }));
    const dev = await openObjstoreDevice({
      storeDir: cacheDir,
      storeName: name,
      store,
      aesKey: AES_KEY,
      aesMode: this.o.aes,
      compression: this.o.compress,
      flushMode: "remote",
      flushEvery: 3600,
      ...extra,
    });
    return { dev, store, cacheDir };
  }

  async close(v: Volume & { cacheDir: string }): Promise<void> {
    await v.dev.close();
    rmSync(v.cacheDir, { recursive: true, force: true });
  }
}

/** Writes `bytes` from offset 0 in 1 MiB requests of `kind` data; resolves with the seconds taken. */
async function writeSequential(dev: ObjstoreDevice, bytes: number, kind: DataKind): Promise<number> {
  const p = pool(kind);
  const t0 = now();
  for (let off = 0; off < bytes; off += MiB) {
    const at = off % POOL_BYTES;
    const r = dev.write(off, p.subarray(at, at + MiB));
    if (r instanceof Promise) await r;
  }
  return (now() - t0) / 1000;
}

/** Sequential 1 MiB reads of the whole volume with `qd` in flight; MB/s. */
async function readSequential(dev: ObjstoreDevice, bytes: number, qd: number): Promise<number> {
  let next = 0;
  const t0 = now();
  await Promise.all(
    Array.from({ length: qd }, async () => {
      while (next < bytes) {
        const off = next;
        next += MiB;
        const r = dev.read(off, MiB);
        if (r instanceof Promise) await r;
      }
    }),
  );
  return mb(bytes, (now() - t0) / 1000);
}

// ---------------------------------------------------------------------------------------------------------------
// Sections

interface ColdRow {
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

async function coldSection(b: Bench, backend: Backend): Promise<Loaded<ColdRow>[]> {
  const o = b.o;
  const rows: Loaded<ColdRow>[] = [];
  for (const objsize of o.coldObjsizes) {
    for (const data of ["2:1", "random"] as DataKind[]) {
      const name = `cold-${objsize / KiB}k-${data === "2:1" ? "c" : "r"}`;
      const place = backend.place(name);
      try {
        const row = await b.measured(async (): Promise<ColdRow> => {
          // Fill and upload.
          const v = await b.open(place, name, { size: o.coldSize, objectSize: objsize });
          const wS = await writeSequential(v.dev, o.coldSize, data);
          const t0 = now();
          await v.dev.flush();
          const upS = (now() - t0) / 1000;
          const compression = gauge(v.dev, "compression ratio");
          const objectBytes = v.store.putBytes;
          await b.close(v);
          // Cold 4 KiB reads, each on a segment not cached yet: latency of the first byte (the whole request).
          const segments = Math.ceil(o.coldSize / objsize);
          const rnd = prng(objsize + (data === "2:1" ? 7 : 0));
          const ids = [...Array(segments).keys()];
          for (let i = ids.length - 1; i > 0; i--) {
            const j = Math.floor(rnd() * (i + 1));
            [ids[i], ids[j]] = [ids[j]!, ids[i]!];
          }
          ids.length = Math.min(o.probes, segments);
          const c1 = await b.open(place, name, {});
          const probeMs: number[] = [];
          for (const id of ids) {
            const off = id * objsize + Math.floor(rnd() * (objsize / (4 * KiB))) * 4 * KiB;
            const t = now();
            const r = c1.dev.read(off, 4 * KiB);
            if (r instanceof Promise) await r;
            probeMs.push(now() - t);
          }
          await b.close(c1);
          // Cold sequential reads at QD1, then a warm pass over the same cache.
          const c2 = await b.open(place, name, {});
          const coldQd1MBs = await readSequential(c2.dev, o.coldSize, 1);
          const coldQd1Gets = c2.store.gets;
          const warmMBs = await readSequential(c2.dev, o.coldSize, 1);
          await b.close(c2);
          // Cold sequential reads at QD8.
          const c3 = await b.open(place, name, {});
          const coldQd8MBs = await readSequential(c3.dev, o.coldSize, 8);
          await b.close(c3);
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

interface UploadRow {
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

async function uploadSection(b: Bench, backend: Backend): Promise<Loaded<UploadRow>[]> {
  const o = b.o;
  const rows: Loaded<UploadRow>[] = [];
  for (const data of ["2:1", "random"] as DataKind[]) {
    for (const concurrency of o.concur) {
      const name = `up-${concurrency}-${data === "2:1" ? "c" : "r"}`;
      const place = backend.place(name);
      try {
        const row = await b.measured(async (): Promise<UploadRow> => {
          const v = await b.open(place, name, { size: o.uploadSize, objectSize: o.uploadObjsize, concurrency });
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
          await b.close(v);
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

interface WaRow {
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

async function waSection(b: Bench, backend: Backend): Promise<Loaded<WaRow>[]> {
  const o = b.o;
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
        const v = await b.open(place, name, { size: o.waSize, objectSize: objsize });
        await writeSequential(v.dev, o.waSize, "2:1");
        await v.dev.flush();
        for (const pattern of ["uniform", "hot"] as const) {
          const r = await b.measured(() => randomWrites(v, backend.name, "filled", pattern, o, objsize));
          rows.push(r);
          note(r);
        }
        await b.close(v);
      } finally {
        place.drop();
      }
    }
    // A new, empty volume per pattern.
    for (const pattern of ["uniform", "hot"] as const) {
      const name = `wa-${objsize / KiB}k-e-${pattern}`;
      const place = backend.place(name);
      try {
        const r = await b.measured(async () => {
          const v = await b.open(place, name, { size: o.waSize, objectSize: objsize });
          const w = await randomWrites(v, backend.name, "empty", pattern, o, objsize);
          await b.close(v);
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

interface SeqRow {
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

async function seqSection(b: Bench, backend: Backend): Promise<Loaded<SeqRow>[]> {
  const o = b.o;
  const rows: Loaded<SeqRow>[] = [];
  for (const objsize of o.objsizes) {
    const name = `seq-${objsize / KiB}k`;
    const place = backend.place(name);
    try {
      const row = await b.measured(async (): Promise<SeqRow> => {
        const v = await b.open(place, name, { size: o.seqSize, objectSize: objsize });
        const before = v.store.snapshot();
        const writeS = await writeSequential(v.dev, o.seqSize, "2:1");
        const t0 = now();
        await v.dev.flush();
        const flushS = (now() - t0) / 1000;
        const after = v.store.snapshot();
        await b.close(v);
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

async function sustainedSection(b: Bench, backend: Backend): Promise<Loaded<SustainedRow>[]> {
  const o = b.o;
  const rows: Loaded<SustainedRow>[] = [];
  const data = pool("random");
  for (const pattern of o.patterns) {
    for (const objsize of o.sustainedObjsizes) {
      for (const threshold of o.thresholds) {
        const name = `sus-${pattern}-${objsize / KiB}k-${Math.round(threshold * 100)}`;
        const place = backend.place(name);
        try {
          rows.push(
            await b.measured(() =>
              sustained(
                async (extra) => {
                  const v = await b.open(place, name, extra);
                  return { dev: v.dev, store: v.store, close: () => b.close(v) };
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

// ---------------------------------------------------------------------------------------------------------------
// Report

type Results = { cold: Loaded<ColdRow>[]; upload: Loaded<UploadRow>[]; wa: Loaded<WaRow>[]; seq: Loaded<SeqRow>[]; sustained: Loaded<SustainedRow>[] };

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

function markdown(o: Options, r: Results, header: string[]): string {
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

// ---------------------------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const repo = resolve(import.meta.dir, "..");
  const o = parseArgs(process.argv.slice(2), repo);
  rmSync(o.scratch, { recursive: true, force: true });
  mkdirSync(o.scratch, { recursive: true });
  mkdirSync(o.out, { recursive: true });
  const facts = await machineFacts(repo, o.scratch);
  const loadStart = readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ");
  const stamp = facts.date.replace(/[:.]/g, "-").slice(0, 19);
  const resultsPath = join(o.out, `objstore-${stamp}.json`);
  let s3: S3Child | undefined;
  const remote = new RemoteStores(o.scratch);
  const results: Results = { cold: [], upload: [], wa: [], seq: [], sustained: [] };
  const save = (extra: Record<string, unknown> = {}) =>
    writeFileSync(resultsPath, JSON.stringify({ facts, options: { ...o, sections: [...o.sections] }, results, ...extra }, null, 1));
  const stop = async () => {
    await s3?.stop();
    await remote.stop();
    if (!o.keep) rmSync(o.scratch, { recursive: true, force: true });
  };
  process.on("SIGINT", () => void stop().then(() => process.exit(130)));
  try {
    const backends: Backend[] = [];
    const b = new Bench(o);
    await remote.start(o.backends);
    for (const name of o.backends) {
      if ((REMOTE_BACKENDS as readonly string[]).includes(name)) {
        const which = name as RemoteBackend;
        backends.push({ name, place: (tag) => remote.place(which, tag) });
      } else if (name === "s3") {
        const dir = join(o.scratch, "s3rver");
        s3 = await startS3Child({ repo, bun: process.execPath, dir });
        const server = s3;
        b.s3Pid = server.pid;
        log(`s3rver at ${server.endpoint} (pid ${server.pid}), data in ${dir}`);
        backends.push({
          name,
          place: (tag) => {
            // One bucket per volume; dropping it removes s3rver's directory for it (quicker than a DELETE per object).
            const bucket = `b-${tag}`.toLowerCase().replace(/[^a-z0-9-]/g, "-");
            return { kind: "s3", config: server.cfgJson(bucket), drop: () => rmSync(join(dir, bucket), { recursive: true, force: true }) };
          },
        });
      } else {
        backends.push({
          name,
          place: (tag) => {
            const path = join(o.scratch, "local", tag);
            return { kind: "local", config: JSON.stringify({ path }), drop: () => rmSync(path, { recursive: true, force: true }) };
          },
        });
      }
    }
    log(`bun ${facts.bun}; ${facts.cpus} CPUs (${facts.cpuModel}); scratch ${o.scratch} (${facts.scratchFs}); results -> ${resultsPath}`);
    for (const backend of backends) {
      if (o.sections.has("cold")) results.cold.push(...(await coldSection(b, backend)));
      save();
      if (o.sections.has("upload")) results.upload.push(...(await uploadSection(b, backend)));
      save();
      if (o.sections.has("wa")) results.wa.push(...(await waSection(b, backend)));
      save();
      if (o.sections.has("seq")) results.seq.push(...(await seqSection(b, backend)));
      save();
      if (o.sections.has("sustained")) results.sustained.push(...(await sustainedSection(b, backend)));
      save();
    }
    const header = [
      `### The objstore device in-process (bench/objstore.ts), ${facts.date.slice(0, 10)}`,
      "",
      `- machine: ${facts.cpus} x ${facts.cpuModel}, ${facts.memoryGiB} GiB RAM, Linux ${facts.kernel}; bun ${facts.bun}; ` +
        `usbd-tui at ${facts.gitCommit}${facts.gitDirty ? ` + uncommitted changes (diff ${facts.gitDiffHash})` : ""}`,
      `- backends: ${o.backends.map((n) => (n === "s3" ? "s3rver 3.7 on 127.0.0.1 (own process, data on the scratch fs)" : n === "local" ? "local directory" : REMOTE_DESCRIPTIONS[n])).join("; ")}; ` +
        `scratch ${o.scratch} (${facts.scratchFs}); --objstore-aesmode=${o.aes} --objstore-compress=${o.compress}, flush mode remote; no CPU pinning`,
      `- load average at start ${loadStart}, at end ${readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ")}`,
      loadLine(results),
    ];
    const md = markdown(o, results, header);
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
