/**
 * The shared conformance suite every usbd-tui device passes. A device author runs it with one line in a test file:
 * `await runConformance("mine", { create: () => createMine({ size: 64 * MiB }) })`.
 *
 * What it checks is the device contract (src/devices/device.ts): exact bytes for any offset and length, range
 * errors, trim and zeroing, each call atomic against overlapping calls, close, and every capability the device
 * claims (read-only refuses writes, persistent survives a reopen, fast zeroing zeroes, multi-conn writes from
 * concurrent callers all land). Checks for an optional feature the device does not have are reported as skipped.
 */
import { afterEach, beforeEach, describe } from "bun:test";
import type { BlockDevice } from "../../src/devices/device.ts";
import { registerClaims } from "./claims.ts";
import { registerData } from "./data.ts";
import { registerDiscard } from "./discard.ts";
import { type DeviceTraits, type SuiteContext, traitsOf } from "./helpers.ts";
import { registerLifecycle } from "./lifecycle.ts";

/** How the suite gets devices to test. */
export interface ConformanceFactory {
  /** A fresh device that reads as zeros, at least 1 MiB (16 MiB or more exercises more). Called before each test. */
  create(): Promise<BlockDevice> | BlockDevice;
  /**
   * For persistent devices: opens the store of the device `create` made last, after it was closed. Given, the
   * suite checks that flushed data survives; a device that claims `persistent` without it fails.
   */
  reopen?(): Promise<BlockDevice> | BlockDevice;
  /** Called after each test once its devices are closed: remove what `create` made. */
  cleanup?(): Promise<void> | void;
  /**
   * What the devices can do, when `create` cannot run before the tests do (it needs a server that a `beforeAll`
   * starts). Otherwise the suite makes one device first to find out. Either way a test checks that the devices
   * really have these traits.
   */
  readonly traits?: DeviceTraits;
}

/**
 * Registers the conformance tests (bun:test `describe` blocks) for one device kind under `name`. Await it at the
 * top of the test file: unless the factory states its traits, it first makes (and closes) one device to learn which
 * optional features to test and which to report as skipped.
 */
export async function runConformance(name: string, factory: ConformanceFactory): Promise<void> {
  const traits = factory.traits ?? (await probe(factory));
  describe(`${name}: device conformance`, () => {
    const ctx = { traits } as SuiteContext;
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
    registerClaims(ctx, factory);
  });
}

async function probe(factory: ConformanceFactory): Promise<DeviceTraits> {
  const dev = await factory.create();
  try {
    return traitsOf(dev);
  } finally {
    await dev.close();
    await factory.cleanup?.();
  }
}

export { MiB, KiB, pattern, traitsOf, type DeviceTraits } from "./helpers.ts";
