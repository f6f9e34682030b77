/**
 * Clients that try to make the server hold memory for them, for the robustness suites: they send requests (or
 * handshake options) and never read the replies. Plus a well-behaved client that writes and verifies a pattern on
 * its own connection meanwhile, and a sampler of the server's resident memory.
 */
import { readFileSync, readdirSync, readlinkSync } from "node:fs";
import { CMD, INFO, type Nbd, OPT, RawClient, encodeRequest, infoData, openExport, option, pattern, startHandshake } from "../protocol/raw-client.ts";

const MiB = 1024 * 1024;

export type FloodKind = "read-32m" | "write-4k" | "info";

export interface Flood {
  readonly kind: FloodKind;
  /** Bytes this client has handed to its socket so far. */
  readonly sent: () => number;
  close(): void;
}

/**
 * Memory over the daemon's documented bound that is not held for clients: garbage the collector has not swept yet
 * (socket chunks, request objects) and freed memory the allocator keeps mapped for reuse (up to its purge delay,
 * src/app/allocator-tuning.ts). It grows with how fast the machine serves, not with time; the fuzzer checks that it
 * goes back once the load stops. Measured here with the daemon's 30 s delay: floods up to 267 MiB over idle (write-4k
 * x50), fuzzing 334-357 MiB over idle in 45 s and 140-390 MiB, with no trend, over 180 s (with the allocator's own
 * 100 ms delay the same runs served 2-4 times less and peaked at 161-235 MiB). A leak is far past it: before the
 * budget one connection reached 600 MB in 8 s.
 */
export const UNCOLLECTED_ALLOWANCE = 256 * 1024 * 1024;

/** How many sockets process `pid` has open (its listener, and one per connection). */
export function openSockets(pid: number): number {
  let n = 0;
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith("socket:")) n++;
    } catch {
      // Closed while we looked.
    }
  }
  return n;
}

/** Resident memory of process `pid` in bytes (VmRSS). */
export function residentBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = /^VmRSS:\s+(\d+) kB$/m.exec(status);
  if (!kb) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(kb[1]) * 1024;
}

/** Samples a process's RSS every `everyMs` until stopped; `peak` is the highest seen. */
export function sampleResident(pid: number, everyMs = 100): { peak(): number; stop(): number } {
  let peak = residentBytes(pid);
  const timer = setInterval(() => {
    try {
      peak = Math.max(peak, residentBytes(pid));
    } catch {
      // The process exited; the last peak stands.
    }
  }, everyMs);
  return {
    peak: () => peak,
    stop() {
      clearInterval(timer);
      return peak;
    },
  };
}

/**
 * One hostile connection on the Unix socket `path` (export `exportName` of `exportSize` bytes):
 * - read-32m: 140 READs of 32 MiB, sent at once, replies never read;
 * - write-4k: 4 KiB WRITEs for as long as the server takes them, replies never read;
 * - info: NBD_OPT_INFO over and over before choosing any export, replies never read.
 */
export async function startFlood(path: string, kind: FloodKind, exportName: string, exportSize: number): Promise<Flood> {
  let raw: RawClient;
  let handle = 1n;
  if (kind === "info") {
    raw = await startHandshake(path);
  } else {
    const nbd: Nbd = await openExport(path, { exportName });
    raw = nbd.raw;
  }
  raw.stopReading();
  let sent = 0;
  let timer: ReturnType<typeof setInterval> | undefined;
  const queue = (bytes: Buffer) => {
    raw.send(bytes);
    sent += bytes.length;
  };
  if (kind === "read-32m") {
    const requests: Buffer[] = [];
    for (let i = 0; i < 140; i++) requests.push(encodeRequest({ type: CMD.READ, offset: (i * 32 * MiB) % (exportSize - 32 * MiB), length: 32 * MiB }, handle++));
    queue(Buffer.concat(requests));
  } else {
    const payload = pattern(4096, 77);
    const batch = (): Buffer => {
      const parts: Buffer[] = [];
      for (let i = 0; i < 64; i++) {
        if (kind === "info") parts.push(option(OPT.INFO, infoData(exportName, [INFO.NAME, INFO.BLOCK_SIZE])));
        // Within the first 16 MiB: the device's own memory for the data stays small, only the replies could pile up.
        else parts.push(encodeRequest({ type: CMD.WRITE, offset: (Number(handle) * 4096) % Math.min(exportSize, 16 * MiB), data: payload }, handle++));
      }
      return Buffer.concat(parts);
    };
    // Keep a little queued at all times: as fast as the server reads, never piling up in this process.
    timer = setInterval(() => {
      while (!raw.closed && raw.unsent < 256 * 1024) queue(batch());
    }, 2);
  }
  return {
    kind,
    sent: () => sent,
    close() {
      clearInterval(timer);
      // Gone at once, as a client that dies: the server must notice though it stopped reading the socket.
      raw.destroy();
    },
  };
}

/**
 * A well-behaved client: writes a fresh pattern to its own region, reads it back, compares; again and again until
 * stopped. Any error or wrong byte is recorded.
 */
export async function startWitness(path: string, exportName: string, region: { offset: number; length: number }): Promise<{
  rounds(): number;
  failures(): readonly string[];
  stop(): Promise<void>;
}> {
  const nbd = await openExport(path, { exportName });
  let rounds = 0;
  let running = true;
  const failures: string[] = [];
  const loop = (async () => {
    while (running) {
      const size = 4096 * (1 + (rounds % 16));
      const offset = region.offset + ((rounds * 65536) % (region.length - size));
      const data = pattern(size, 5000 + rounds);
      try {
        await nbd.write(offset, data);
        const back = await nbd.read(offset, size);
        if (!back.equals(Buffer.from(data))) failures.push(`round ${rounds}: data read back differs at offset ${offset}`);
      } catch (error) {
        failures.push(`round ${rounds}: ${error instanceof Error ? error.message : String(error)}`);
        return;
      }
      rounds++;
    }
  })();
  return {
    rounds: () => rounds,
    failures: () => failures,
    async stop() {
      running = false;
      await loop;
      nbd.raw.close();
    },
  };
}
