/**
 * Starts the real NBD listener in-process on a fresh Unix socket for the protocol suites, and wraps devices so a
 * test can slow calls down or watch their order.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { BlockDevice } from "../../src/devices/device.ts";
import { createMemDevice } from "../../src/devices/mem/index.ts";
import { type Export, type NbdServer, listen } from "../../src/engine/listen.ts";
import { silentLogger } from "../../src/shared/log.ts";
import { DeviceMetrics } from "../../src/engine/metrics.ts";
import { pattern } from "./raw-client.ts";

export const MiB = 1024 * 1024;
/** The size of the "disk" export every suite serves. */
export const DISK_SIZE = 64 * MiB;

export interface TestServer {
  readonly server: NbdServer;
  readonly path: string;
  /** The first export's device and metrics. */
  readonly device: BlockDevice;
  readonly metrics: DeviceMetrics;
  readonly exports: readonly Export[];
  /** Stops the server (if a test has not) and removes the temporary directory. */
  cleanup(): Promise<void>;
}

export interface ExportSpec {
  readonly name: string;
  readonly device: BlockDevice;
}

/** Serves `disk` (a 64 MiB mem device unless given) plus any extra exports on a new Unix socket. */
export async function startServer(options: { disk?: BlockDevice; extra?: readonly ExportSpec[] } = {}): Promise<TestServer> {
  const dir = mkdtempSync(join(tmpdir(), "usbd-proto-"));
  const path = join(dir, "nbd.sock");
  const exports: Export[] = [
    { name: "disk", device: options.disk ?? createMemDevice({ size: DISK_SIZE }), metrics: new DeviceMetrics() },
    ...(options.extra ?? []).map((e) => ({ name: e.name, device: e.device, metrics: new DeviceMetrics() })),
  ];
  const server = await listen({ kind: "unix", path }, exports, { log: silentLogger });
  return {
    server,
    path,
    device: exports[0]!.device,
    metrics: exports[0]!.metrics,
    exports,
    async cleanup() {
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A device that forwards to `inner` except for the methods (and capabilities) given in `overrides`. */
export function wrapDevice(inner: BlockDevice, overrides: Partial<BlockDevice> = {}): BlockDevice {
  const base: BlockDevice = {
    kind: inner.kind,
    size: inner.size,
    blockSize: inner.blockSize,
    capabilities: inner.capabilities,
    read: (offset, length) => inner.read(offset, length),
    write: (offset, data, options) => inner.write(offset, data, options),
    trim: (offset, length, options) => inner.trim(offset, length, options),
    flush: () => inner.flush(),
    close: () => inner.close(),
  };
  if (inner.writeZeroes) base.writeZeroes = (offset, length, options) => inner.writeZeroes!(offset, length, options);
  if (inner.extents) base.extents = (offset, length) => inner.extents!(offset, length);
  return { ...base, ...overrides };
}

/**
 * A mem device of `size` bytes whose first `filled` bytes hold pattern(filled, seed), whose reads (and, with
 * `slowWrites`, writes) take `ms`; `started` counts the slowed calls that have begun.
 */
export function slowDevice(
  ms: number,
  options: { readonly size: number; readonly filled: number; readonly seed: number; readonly slowWrites: boolean },
): { device: BlockDevice; started: () => number } {
  const inner = createMemDevice({ size: options.size });
  inner.write(0, pattern(options.filled, options.seed));
  let started = 0;
  const overrides: Partial<BlockDevice> = {
    read: (offset, length) => {
      started++;
      return later(ms, () => inner.read(offset, length).slice());
    },
  };
  if (options.slowWrites) {
    overrides.write = (offset, data) => {
      started++;
      return later(ms, () => inner.write(offset, data));
    };
  }
  return { device: wrapDevice(inner, overrides), started: () => started };
}

/** Waits (polling every 2 ms) until `condition()` holds; throws after `timeoutMs`. */
export async function until(condition: () => boolean, timeoutMs = 2000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error("condition not reached in time");
    await Bun.sleep(2);
  }
}

/** Resolves `value()` after `ms` milliseconds (value runs then, not now). */
export function later<T>(ms: number, value: () => T | Promise<T>): Promise<T> {
  return Bun.sleep(ms).then(value);
}
