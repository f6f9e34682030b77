// Runs the conformance suite on the device BROKEN_DEVICE names (see broken-devices.ts); catches.test.ts drives it.
import { runConformance } from "../conformance/index.ts";
import { BROKEN } from "./broken-devices.ts";

const name = process.env.BROKEN_DEVICE ?? "";
const make = BROKEN[name];
if (make === undefined) throw new Error(`BROKEN_DEVICE must be one of ${Object.keys(BROKEN).join(", ")}, not "${name}"`);
await runConformance(name, { create: make });
