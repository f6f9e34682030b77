// The dedup device survives SIGKILL at any moment: a child runs a deterministic workload on a real store and is
// killed at random times; after each kill `check` must find nothing wrong and the device must read back exactly
// the state of a commit the child reached: the last flush it reported, or one it was making (a FUA write or the
// flush in progress when it died). Nothing acknowledged by a completed flush may be missing. The same runs with a
// workload of 512 B and 1 KiB writes, so kills land while blocks are held for coalescing, and once with a kill that
// certainly does: after the child reports blocks held and not yet flushed.
import { afterAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { checkDedupStore } from "../../src/devices/dedup/check.ts";
import { openDedupDevice } from "../../src/devices/dedup/index.ts";
import { watch, waitFor } from "../helpers/process.ts";
import { CRASH_DEVICE_SIZE, applyToModel, workloadOps, type CrashOp, type CrashWorkload } from "./dedup-crash-ops.ts";

const ITERATIONS = Number(process.env.DEDUP_CRASH_ITERATIONS ?? 25);
const SUB_BLOCK_ITERATIONS = Math.ceil(ITERATIONS / 2);
const BUN = process.execPath;
const CHILD = path.join(import.meta.dir, "dedup-crash-child.ts");
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "usbd-dedup-crash-"));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const digest = (data: Uint8Array): string => createHash("sha256").update(data).digest("hex");

/** The states a crash during `epoch` may leave: after each FUA write in it, and after the whole epoch (its flush). */
function commitPoints(ops: CrashOp[], model: Uint8Array): { states: Map<string, Uint8Array>; end: Uint8Array } {
  const state = model.slice();
  const states = new Map<string, Uint8Array>();
  for (const op of ops) {
    applyToModel(state, op);
    if (op.kind === "write" && op.fua) states.set(digest(state), state.slice());
  }
  states.set(digest(state), state);
  return { states, end: state };
}

async function killAtRandom(workload: CrashWorkload, iterations: number): Promise<void> {
  const name = `crash-${workload}`;
  const seed = 4242;
  const opsFor = workloadOps(workload);
  let model: Uint8Array = new Uint8Array(CRASH_DEVICE_SIZE);
  let nextEpoch = 0;
  let totalEpochs = 0;
  let midEpochStates = 0;
  for (let i = 0; i < iterations; i++) {
    const child = watch([BUN, CHILD, dir, name, String(seed), String(nextEpoch), workload]);
    await waitFor("the child to open the store", child, () => (child.stdout().includes("ready") ? true : undefined), 20_000);
    await Bun.sleep(20 + Math.random() * 300);
    await child.stop("SIGKILL", 5_000);
    const flushed = [...child.stdout().matchAll(/flushed (\d+)/g)].map((m) => Number(m[1]));
    const lastFlushed = flushed.length > 0 ? flushed.at(-1)! : nextEpoch - 1;
    for (let e = nextEpoch; e <= lastFlushed; e++) for (const op of opsFor(seed, e)) applyToModel(model, op);
    totalEpochs += lastFlushed - nextEpoch + 1;

    const report = checkDedupStore({ storeDir: dir, storeName: name });
    expect({ iteration: i, problems: report.problems }).toEqual({ iteration: i, problems: [] });

    const dev = openDedupDevice({ storeDir: dir, storeName: name });
    const actual = digest(dev.read(0, CRASH_DEVICE_SIZE));
    const atFlush = digest(model);
    const inProgress = commitPoints(opsFor(seed, lastFlushed + 1), model);
    if (actual === atFlush) {
      nextEpoch = lastFlushed + 1;
    } else {
      // Killed after a commit inside the next epoch: a FUA write, or its flush before "flushed" was printed.
      const state = inProgress.states.get(actual);
      expect({ iteration: i, matches: state !== undefined ? "a commit point" : "nothing acknowledged" }).toEqual({ iteration: i, matches: "a commit point" });
      if (digest(inProgress.end) === actual) {
        model = inProgress.end;
        nextEpoch = lastFlushed + 2;
      } else {
        // Put the device back at the epoch boundary so the next child starts from a known state.
        midEpochStates++;
        dev.write(0, model);
        dev.flush();
        nextEpoch = lastFlushed + 1;
      }
    }
    dev.close();
  }
  console.log(`dedup crash (${workload}): ${iterations} kills, ${totalEpochs} flushed epochs, ${midEpochStates} kills between commits of an epoch`);
  expect(totalEpochs).toBeGreaterThan(iterations);
  const final = checkDedupStore({ storeDir: dir, storeName: name });
  expect(final.problems).toEqual([]);
  expect(final.blocks).toBeGreaterThan(0);
}

describe("dedup: crash consistency under SIGKILL", () => {
  test(`${ITERATIONS} kills at random moments: check is clean and every flushed write reads back`, () => killAtRandom("mixed", ITERATIONS), 300_000);

  test(`${SUB_BLOCK_ITERATIONS} kills during 512 B and 1 KiB writes (blocks held for coalescing): nothing flushed is lost`, () => killAtRandom("sub-block", SUB_BLOCK_ITERATIONS), 300_000);

  test("a kill while blocks are held for coalescing loses nothing acknowledged before the last FLUSH", async () => {
    const name = "crash-hold";
    const seed = 77;
    const opsFor = workloadOps("sub-block");
    const child = watch([BUN, CHILD, dir, name, String(seed), "0", "sub-block", "3"]);
    const held = await waitFor("the child to hold blocks", child, () => /holding (\d+)/.exec(child.stdout())?.[1], 30_000);
    await child.stop("SIGKILL", 5_000);
    // The epoch after the last flush left blocks held, acknowledged but not committed.
    expect(Number(held)).toBeGreaterThan(0);
    const model = new Uint8Array(CRASH_DEVICE_SIZE);
    for (let e = 0; e < 3; e++) for (const op of opsFor(seed, e)) applyToModel(model, op);
    expect(checkDedupStore({ storeDir: dir, storeName: name }).problems).toEqual([]);
    const dev = openDedupDevice({ storeDir: dir, storeName: name });
    expect(digest(dev.read(0, CRASH_DEVICE_SIZE))).toBe(digest(model));
    dev.close();
  }, 60_000);
});
