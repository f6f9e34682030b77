/**
 * The shared conformance suite every usbd-tui device passes. A device author runs it with one line in a test file:
 * `runConformance("mine", { create: () => createMine({ size: 64 * MiB }) })`.
 */
import { afterEach, beforeEach, describe } from "bun:test";
import type { BlockDevice } from "../../src/devices/device.ts";
import { registerData } from "./data.ts";
import { registerDiscard } from "./discard.ts";
import type { SuiteContext } from "./helpers.ts";
import { registerLifecycle } from "./lifecycle.ts";

/** How the suite gets devices to test. */
export interface ConformanceFactory {
  /** A fresh device that reads as zeros, at least 1 MiB (16 MiB or more exercises more). Called before each test. */
  create(): Promise<BlockDevice> | BlockDevice;
  /**
   * For persistent devices: opens the store of the device `create` made last, after it was closed. Given, the
   * suite checks that flushed data survives.
   */
  reopen?(): Promise<BlockDevice> | BlockDevice;
  /** Called after each test once its devices are closed: remove what `create` made. */
  cleanup?(): Promise<void> | void;
}

/** Registers the conformance tests (bun:test `describe` blocks) for one device kind under `name`. */
export function runConformance(name: string, factory: ConformanceFactory): void {
  describe(`${name}: device conformance`, () => {
    const ctx = {} as SuiteContext;
    beforeEach(async () => {
      ctx.dev = await factory.create();
    });
    afterEach(async () => {
      // close is idempotent, so tests that closed the device themselves need no special case.
      await ctx.dev.close();
      await factory.cleanup?.();
    });
    registerData(ctx);
    registerDiscard(ctx);
    registerLifecycle(ctx, factory);
  });
}

export { MiB, KiB, pattern } from "./helpers.ts";
