/**
 * The objstore codec's work that runs on the worker pool (src/shared/worker-pool.ts, entry seal-worker.ts): encoding a
 * whole object (compress + seal every chunk and the header) and opening a run of chunks (check + decrypt +
 * decompress), the same code ObjectCodec runs inline, given everything as plain cloneable data.
 */
import crypto from "node:crypto";
import { type LogExtent, ObjectCodec, type ObjectCodecOptions, type ObjectIdentity, type ObjectLayout } from "./log-object.ts";

export interface EncodeJob {
  readonly options: ObjectCodecOptions;
  readonly id: ObjectIdentity;
  readonly extents: readonly LogExtent[];
  readonly data: Uint8Array;
  /** Also the MD5 digest of the stored bytes. */
  readonly md5: boolean;
}

export interface DecodeJob {
  readonly options: ObjectCodecOptions;
  readonly volumeId: Uint8Array;
  readonly layout: ObjectLayout;
  readonly first: number;
  readonly stored: Uint8Array;
}

/** One codec per distinct options in this worker (a volume's options never change). */
const codecs = new Map<string, ObjectCodec>();
function codecFor(options: ObjectCodecOptions): ObjectCodec {
  const { compression, encryption, chunkSize, keys } = options;
  // Named by a digest of the keys, so no copy of key material sits in a map key.
  const keyId = keys === undefined ? "" : crypto.createHash("sha256").update(keys.encryption).update(keys.mac).digest("hex");
  const name = `${compression}/${encryption}/${chunkSize}/${keyId}`;
  let codec = codecs.get(name);
  if (codec === undefined) {
    if (codecs.size >= 16) codecs.clear();
    codec = new ObjectCodec({ compression, encryption, chunkSize, ...(keys === undefined ? {} : { keys }) });
    codecs.set(name, codec);
  }
  return codec;
}

export const sealJobs = {
  encodeObject: (job: EncodeJob) => codecFor(job.options).encode(job.id, job.extents, job.data, false, job.md5),
  decodeChunks: (job: DecodeJob) => codecFor(job.options).decodeChunks(job.volumeId, job.layout, job.first, job.stored),
};
