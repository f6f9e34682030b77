#!/usr/bin/env bun
/** The `usbd-tui` command: runs the CLI and exits with its code. */
import { main } from "../src/cli/main.ts";

process.exitCode = await main(process.argv.slice(2));
process.exit();
