// The reattach record: written atomically and privately, read back, and ignored when it is not one.
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readAttachmentRecord, removeAttachmentRecord, writeAttachmentRecord } from "../../src/engine/kernel/state.ts";

const dir = mkdtempSync(join(tmpdir(), "usbd-state-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("reattach record", () => {
  test("round trip, mode 0600, and removal", () => {
    const path = join(dir, "vol.nbd.json");
    const record = { version: 1, device: "/dev/nbd2", index: 2, backend: "usbd-tui:file:/s/vol", connections: 2, pid: 42, attachedAt: "2026-11-25T00:00:00.000Z" } as const;
    writeAttachmentRecord(path, record);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(readAttachmentRecord(path)).toEqual(record);
    removeAttachmentRecord(path);
    expect(readAttachmentRecord(path)).toBeUndefined();
    expect(() => removeAttachmentRecord(path)).not.toThrow();
  });

  test("garbage, a foreign version and missing fields read as no record", () => {
    const path = join(dir, "bad.nbd.json");
    for (const text of ["{", "[]", '{"version":2,"device":"/dev/nbd0","index":0}', '{"version":1,"device":"/dev/nbd0"}']) {
      writeFileSync(path, text);
      expect(readAttachmentRecord(path)).toBeUndefined();
    }
  });
});
