/**
 * Child of the dedup crash test: opens the store, then runs epochs from `start` on, printing "flushed N" after each
 * epoch's flush returned, until it is killed. Usage: bun dedup-crash-child.ts DIR NAME SEED START
 */
import fs from "node:fs";
import { openDedupDevice } from "../../src/devices/dedup/index.ts";
import { CRASH_DEVICE_SIZE, applyToDevice, opsFor } from "./dedup-crash-ops.ts";

const [dir, name, seedText, startText] = process.argv.slice(2);
const seed = Number(seedText);
const dev = openDedupDevice({ storeDir: dir!, storeName: name!, size: CRASH_DEVICE_SIZE });
// writeSync: the line must be out before the next epoch starts, or a kill could lose a flush the device made.
const say = (line: string): void => void fs.writeSync(1, `${line}\n`);
say("ready");
for (let epoch = Number(startText); ; epoch++) {
  for (const op of opsFor(seed, epoch)) await applyToDevice(dev, op);
  await dev.flush();
  say(`flushed ${epoch}`);
}
