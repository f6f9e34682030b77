/** The objstore device's gauges for the dashboard and the headless stats lines. */
import type { DeviceGauge, DeviceStats } from "../device.ts";
import { OPEN, SEALED, STORED } from "./objects.ts";
import type { ObjstoreRuntime } from "./runtime.ts";

export function deviceStats(r: ObjstoreRuntime): DeviceStats {
  const { v, writer, uploader, checkpointer, gc, cache } = r;
  const { stats } = v;
  let pendingObjects = 0;
  let logObjects = 0;
  let storedData = 0;
  let storedLive = 0;
  for (const o of v.objects.values()) {
    if (o.state === SEALED || (o.state === OPEN && (o.dataLength > 0 || o.extentCount > 0))) pendingObjects++;
    if (o.state === STORED && v.owner(o.seq).own) {
      logObjects++;
      storedData += o.dataLength;
      storedLive += o.live;
    }
  }
  const rates = stats.rates();
  const written = writer.writtenBytes;
  const gauges: DeviceGauge[] = [
    { name: "dirty objects", value: pendingObjects, unit: "count", max: Math.max(1, pendingObjects, logObjects > 0 ? Math.min(logObjects, 64) : 0) },
    { name: "dirty bytes", value: writer.pendingBytes(), unit: "bytes" },
    { name: "upload backlog", value: uploader?.backlog ?? 0, unit: "count" },
    { name: "uploads in flight", value: uploader?.uploadsInFlight ?? 0, unit: "count" },
    { name: "log objects", value: logObjects, unit: "count" },
    { name: "live ratio", value: storedData === 0 ? 1 : storedLive / storedData, unit: "ratio" },
    { name: "GC bytes", value: writer.gcBytes, unit: "bytes" },
    { name: "write amplification", value: written === 0 ? 0 : stats.uploadedBytes / written, unit: "ratio" },
    { name: "cache", value: cache.bytes, unit: "bytes", ...(cache.bound > 0 ? { max: cache.bound } : {}) },
    { name: "since last full upload", value: r.lastCleanAt === 0 ? 0 : (Date.now() - r.lastCleanAt) / 1000, unit: "seconds" },
    { name: "upload rate", value: rates.up, unit: "bytes/s" },
    { name: "download rate", value: rates.down, unit: "bytes/s" },
    { name: "uploaded", value: stats.uploadedBytes, unit: "bytes" },
    { name: "downloaded", value: stats.downloadedBytes, unit: "bytes" },
    { name: "store GETs", value: stats.downloads, unit: "count" },
    { name: "compression ratio", value: stats.logBytes === 0 ? 1 : stats.uploadedPlainBytes / stats.logBytes, unit: "ratio" },
    { name: "store deletes", value: checkpointer?.deletedObjects ?? 0, unit: "count" },
    { name: "GC cycles", value: gc?.cycles ?? 0, unit: "count" },
    { name: "store errors", value: stats.errors, unit: "count" },
  ];
  const fenced = uploader?.fenced;
  if (fenced !== undefined) return { gauges, lastError: fenced };
  // The error shows while the store is failing; once it works again only the error count remains.
  return stats.failing && stats.lastError !== undefined ? { gauges, lastError: stats.lastError } : { gauges };
}
