/**
 * Devices that break the contract on purpose, each in one way a real device has (the Go original's 1-byte write
 * that replaced its block, a trim that spills over, a short read past the end, a write that tears, capabilities
 * claimed but not had), so the conformance suite can be shown to catch each. Not shipped with the suite.
 */
import type { BlockDevice, DeviceCapabilities } from "../../src/devices/device.ts";
import { createMemDevice } from "../../src/devices/mem/index.ts";

const MiB = 1024 * 1024;
const SIZE = 16 * MiB;

/** A mem device with some calls replaced; the optional calls are kept only where `keep` says. */
function patched(overrides: Partial<BlockDevice>, keep: { writeZeroes?: boolean; extents?: boolean; reclaim?: boolean } = {}): BlockDevice {
  const inner = createMemDevice({ size: SIZE });
  const dev: BlockDevice = {
    kind: "broken",
    size: inner.size,
    blockSize: inner.blockSize,
    // Without writeZeroes a device has nothing fast to zero with.
    capabilities: keep.writeZeroes === false ? { ...inner.capabilities, fastZero: false } : inner.capabilities,
    read: (o, l) => inner.read(o, l),
    write: (o, d) => inner.write(o, d),
    trim: (o, l) => inner.trim(o, l),
    flush: () => inner.flush(),
    close: () => inner.close(),
  };
  if (keep.writeZeroes !== false) dev.writeZeroes = (o, l, opts) => inner.writeZeroes(o, l, opts);
  if (keep.extents !== false) dev.extents = (o, l) => inner.extents(o, l);
  if (keep.reclaim !== false) dev.reclaim = () => inner.reclaim();
  return { ...dev, ...overrides, read: overrides.read ?? dev.read };
}

function blockReplacer(): BlockDevice {
  const inner = createMemDevice({ size: SIZE });
  const bs = inner.blockSize;
  return patched({
    // Like the Go original: a write inside a block rewrites the whole block, zeros where the caller sent nothing.
    write: (offset, data) => {
      const first = Math.floor(offset / bs) * bs;
      const end = Math.min(SIZE, Math.ceil((offset + data.length) / bs) * bs);
      const block = new Uint8Array(end - first);
      block.set(data, offset - first);
      inner.write(first, block);
    },
    read: (o, l) => inner.read(o, l),
  });
}

function trimSpills(): BlockDevice {
  const inner = createMemDevice({ size: SIZE });
  return patched({
    write: (o, d) => inner.write(o, d),
    read: (o, l) => inner.read(o, l),
    // Rounds the end up to the next 4 KiB, clearing bytes after the range.
    trim: (o, l) => inner.writeZeroes(o, Math.min(SIZE - o, Math.ceil((o + l) / 4096) * 4096 + 4096 - o)),
  });
}

function shortReads(): BlockDevice {
  const inner = createMemDevice({ size: SIZE });
  return patched({
    write: (o, d) => inner.write(o, d),
    // Past the end: the bytes that exist instead of EINVAL.
    read: (o, l) => (o >= 0 && o + l > SIZE && o < SIZE ? inner.read(o, SIZE - o) : inner.read(o, l)),
  });
}

function tearing(): BlockDevice {
  const inner = createMemDevice({ size: SIZE });
  return patched({
    read: async (o, l) => inner.read(o, l).slice(),
    // Stores 4 KiB at a time, letting other calls run in between: a concurrent read or write sees it half done.
    write: async (offset, data) => {
      for (let done = 0; done < data.length; done += 4096) {
        inner.write(offset + done, data.slice(done, done + 4096));
        await Bun.sleep(0);
      }
    },
  });
}

function lying(): BlockDevice {
  const claims: DeviceCapabilities = { readOnly: true, persistent: true, fastZero: true, multiConn: true, trim: true };
  // Claims read-only, persistence and fast zeroing; accepts writes, forgets everything at close, cannot zero.
  return patched({ capabilities: claims }, { writeZeroes: false });
}

/** A correct device without the optional calls: the suite must pass it and report what it skipped. */
function minimal(): BlockDevice {
  return patched({}, { writeZeroes: false, extents: false, reclaim: false });
}

export const BROKEN: Readonly<Record<string, () => BlockDevice>> = {
  "block-replacer": blockReplacer,
  "trim-spills": trimSpills,
  "short-reads": shortReads,
  tearing,
  lying,
  minimal,
};
