#!/usr/bin/env bun
/**
 * A complete custom usbd-tui device: a RAM disk that stores every 4 KiB block XOR-scrambled, served over NBD.
 * Run: bun examples/xor-disk.ts unix:/tmp/xor.sock   then: nbdinfo 'nbd+unix:///?socket=/tmp/xor.sock'
 */
import { type BlockDevice, checkOpen, checkRange, serve } from "../src/index.ts";

const BLOCK = 4096;
const KEY = 0x5a;

export function createXorDisk(size: number): BlockDevice {
  const blocks = new Map<number, Uint8Array>(); // block index -> scrambled bytes; absent = zeros
  let closed = false;
  const guard = (offset: number, length: number) => {
    checkOpen(closed, "xor");
    checkRange(size, offset, length);
  };
  const eachBlock = (offset: number, length: number, visit: (block: number, start: number, n: number, done: number) => void) => {
    for (let done = 0; done < length; ) {
      const block = Math.floor((offset + done) / BLOCK);
      const start = (offset + done) % BLOCK;
      const n = Math.min(BLOCK - start, length - done);
      visit(block, start, n, done);
      done += n;
    }
  };
  return {
    kind: "xor",
    size,
    blockSize: BLOCK,
    capabilities: { fua: true, trim: true, multiConn: true },
    read(offset, length) {
      guard(offset, length);
      const out = new Uint8Array(length);
      eachBlock(offset, length, (block, start, n, done) => {
        const stored = blocks.get(block);
        if (stored) for (let i = 0; i < n; i++) out[done + i] = stored[start + i]! ^ KEY;
      });
      return out;
    },
    write(offset, data) {
      guard(offset, data.length);
      eachBlock(offset, data.length, (block, start, n, done) => {
        let stored = blocks.get(block);
        if (!stored) blocks.set(block, (stored = new Uint8Array(BLOCK).fill(KEY)));
        for (let i = 0; i < n; i++) stored[start + i] = data[done + i]! ^ KEY;
      });
    },
    trim(offset, length) {
      guard(offset, length);
      // Whole blocks are dropped; partial ones keep their data, which trim allows.
      eachBlock(offset, length, (block, _start, n) => n === BLOCK && blocks.delete(block));
    },
    flush: () => checkOpen(closed, "xor"),
    close: () => void (closed = true),
  };
}

if (import.meta.main) {
  const server = await serve(createXorDisk(256 * 1024 * 1024), process.argv[2] ?? "unix:/tmp/xor.sock", { name: "xor" });
  console.log(`serving ${server.uri()}`);
  process.on("SIGTERM", () => void server.stop().then(() => process.exit(0)));
}
