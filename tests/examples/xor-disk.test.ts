// The examples/ custom device: it passes the shared conformance suite and serves real NBD clients.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { createXorDisk } from "../../examples/xor-disk.ts";
import { MiB, runConformance } from "../conformance/index.ts";

await runConformance("examples/xor-disk", { create: () => createXorDisk(16 * MiB) });

describe("examples/xor-disk served to real clients", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "usbd-example-"));
  const socket = path.join(dir, "xor.sock");
  const uri = `nbd+unix:///xor?socket=${socket}`;
  let child: ReturnType<typeof Bun.spawn> | undefined;

  beforeAll(async () => {
    child = Bun.spawn([process.execPath, path.join(import.meta.dir, "../../examples/xor-disk.ts"), `unix:${socket}`], {
      stdout: "pipe",
      stderr: "inherit",
    });
    const reader = (child.stdout as ReadableStream<Uint8Array>).getReader();
    const { value } = await reader.read();
    expect(new TextDecoder().decode(value)).toContain("serving nbd+unix:///xor");
  });

  afterAll(async () => {
    child?.kill("SIGTERM");
    expect(await child?.exited).toBe(0);
    rmSync(dir, { recursive: true, force: true });
  });

  const run = (cmd: string[]) => {
    const r = Bun.spawnSync(cmd, { stderr: "pipe" });
    if (r.exitCode !== 0) throw new Error(`${cmd.join(" ")} failed (${r.exitCode}): ${r.stderr.toString()}`);
    return r.stdout.toString();
  };

  test("qemu-io writes and reads patterns at unaligned offsets", () => {
    const out = run(["qemu-io", "-f", "raw", uri, "-c", "write -P 0x33 4000 9000", "-c", "read -P 0x33 4000 9000", "-c", "read -P 0 0 4000"]);
    expect(out).not.toContain("Pattern verification failed");
  });

  test("nbdcopy round-trips 8 MiB of random data", () => {
    const data = crypto.getRandomValues(new Uint8Array(8 * MiB));
    const input = path.join(dir, "in.bin");
    const output = path.join(dir, "out.bin");
    writeFileSync(input, data);
    run(["nbdcopy", input, uri]);
    run(["nbdcopy", uri, output]);
    const copied = readFileSync(output);
    expect(copied.length).toBe(256 * MiB);
    expect(Bun.hash(copied.subarray(0, data.length))).toBe(Bun.hash(data));
  });
});
