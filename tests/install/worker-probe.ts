/**
 * Compiled by the install suite into a binary of its own (with scripts/build-binary.ts's buildBinary, so with the
 * same worker entry points as dist/usbd-tui) to see that each Worker the program starts runs inside a binary: the
 * kernel path's blocking call, the objstore's sealing and the dedup hasher. Prints one JSON line.
 * Usage: worker-probe FILE (a file to fsync)
 */
import crypto from "node:crypto";
import { deriveVolumeKeys } from "../../src/devices/objstore/codec/keys.ts";
import { KIND_LOG } from "../../src/devices/objstore/codec/log-object.ts";
import { OFFLOAD_MIN_BYTES, OffloadedCodec } from "../../src/devices/objstore/codec/offloaded-codec.ts";
import { OFF_THREAD_MIN_BYTES, OffThreadHasher } from "../../src/devices/dedup/off-thread-hasher.ts";
import { runBlocking } from "../../src/engine/kernel/blocking.ts";

const file = process.argv[2];
if (file === undefined) throw new Error("usage: worker-probe FILE");

const fsync = await runBlocking({ op: "fsync", path: file });

const inlineReasons: string[] = [];
const codec = new OffloadedCodec({ compression: "lz4", encryption: "aes-gcm", keys: deriveVolumeKeys(new Uint8Array(crypto.randomBytes(32))), chunkSize: 64 * 1024, onInline: (r) => inlineReasons.push(r) });
await codec.encode({ volumeId: new Uint8Array(16), kind: KIND_LOG, seq: 1, epoch: 1 }, [], new Uint8Array(crypto.randomBytes(OFFLOAD_MIN_BYTES)));
codec.close();

const hasher = new OffThreadHasher(4096);
const hashed = await hasher.start(0, new Uint8Array(crypto.randomBytes(OFF_THREAD_MIN_BYTES)));
hasher.close();

console.log(JSON.stringify({ fsync, sealedOnWorker: codec.offloaded, inlineReasons, hashedOnWorker: hasher.blocks, hashes: hashed?.hashes.length ?? 0 }));
process.exit(0);
