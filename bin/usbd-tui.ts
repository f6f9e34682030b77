#!/usr/bin/env bun
/**
 * The `usbd-tui` command on Bun: runs the CLI and exits with its code. (npm installs bin/usbd-tui.js, which finds
 * Bun under Node.js and runs this file with it.) Started by a Node.js that can read TypeScript, it says what to do
 * instead of failing on the first Bun API.
 */
if (typeof Bun === "undefined") {
  process.stderr.write(`usbd-tui: this is the Bun entry point; run it with bun (bun ${process.argv[1]}), or run bin/usbd-tui.js, which finds the Bun that npm installed with usbd-tui\n`);
  process.exit(1);
}
const { applyPurgeDelay } = await import("../src/app/allocator-tuning.ts");
applyPurgeDelay();
const { main } = await import("../src/cli/main.ts");
process.exitCode = await main(process.argv.slice(2));
process.exit();
export {};
