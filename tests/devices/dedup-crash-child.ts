/**
 * Child of the dedup crash test: opens the store, then runs epochs of WORKLOAD (mixed or sub-block) from `start` on,
 * printing "flushed N" after each epoch's flush returned, until it is killed. With HOLD (a number of epochs), it
 * stops after that many: it runs one more epoch without its flush and without FUA, prints "holding N" (N blocks
 * held for coalescing, acknowledged and not yet committed) and waits to be killed.
 * Usage: bun dedup-crash-child.ts DIR NAME SEED START [WORKLOAD] [HOLD]
 */
import fs from "node:fs";
import { openDedupDevice } from "../../src/devices/dedup/index.ts";
import { CRASH_DEVICE_SIZE, applyToDevice, workloadOps, type CrashWorkload } from "./dedup-crash-ops.ts";

const [dir, name, seedText, startText, workload = "mixed", holdText] = process.argv.slice(2);
const seed = Number(seedText);
const ops = workloadOps(workload as CrashWorkload);
const dev = openDedupDevice({ storeDir: dir!, storeName: name!, size: CRASH_DEVICE_SIZE });
// writeSync: the line must be out before the next epoch starts, or a kill could lose a flush the device made.
const say = (line: string): void => void fs.writeSync(1, `${line}\n`);
say("ready");
const start = Number(startText);
const stop = holdText === undefined ? Infinity : start + Number(holdText);
for (let epoch = start; epoch < stop; epoch++) {
  for (const op of ops(seed, epoch)) await applyToDevice(dev, op);
  await dev.flush();
  say(`flushed ${epoch}`);
}
for (const op of ops(seed, stop)) await applyToDevice(dev, op.kind === "write" ? { ...op, fua: false } : op);
const held = dev.stats().gauges.find((g) => g.name === "blocks being coalesced")?.value ?? 0;
say(`holding ${held}`);
setInterval(() => {}, 1000);
