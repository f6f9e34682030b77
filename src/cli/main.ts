/**
 * The `usbd-tui` entry point: parse flags, open the device, then run headless (the dashboard arrives with its own
 * issue), serving over a socket (--listen) or to the kernel as /dev/nbdX. Maps every failure to the documented
 * exit codes: 0 clean, 1 runtime failure, 2 usage error.
 */
import { mkdirSync } from "node:fs";
import { DEVICE_KINDS, createDevice, deviceKinds, isDeviceKind, type DeviceOptions } from "../devices/index.ts";
import { KeyError } from "../devices/objstore/codec/keys.ts";
import { ObjectStoreConfigError } from "../devices/objstore/store/config.ts";
import { AddressError, parseListenAddress } from "../engine/address.ts";
import { Host } from "../engine/host.ts";
import { prepareKernel } from "../engine/kernel/attach.ts";
import { KernelUsageError } from "../engine/kernel/module.ts";
import { ListenError } from "../engine/listen.ts";
import { type Logger, jsonLogger, textLogger } from "../engine/log.ts";
import { type CliOptions, UsageError, helpText, parseFlags } from "./flags.ts";
import { checkUsageProblem, runCheck } from "./check.ts";
import { runHeadless } from "./headless.ts";
import type { ObjstoreCliOptions } from "./objstore-flags.ts";
import { VERSION } from "./version.ts";

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

function usage(message: string): number {
  process.stderr.write(`usbd-tui: ${message}\n`);
  return EXIT_USAGE;
}

function objstoreOptions(o: ObjstoreCliOptions): DeviceOptions["objstore"] {
  return {
    kind: o.kind,
    config: o.config,
    objectSize: o.objectSize,
    diskCache: o.diskCache,
    persistCache: o.persistCache,
    aesKey: o.aesKey,
    aesMode: o.aesMode,
    compression: o.compression,
    concurrency: o.concurrency,
    flushEvery: o.flushEvery,
    flushMode: o.flushMode,
  };
}

function validate(options: CliOptions): string | undefined {
  if (!isDeviceKind(options.devType)) {
    return `unknown device type "${options.devType}"; --dev-type must be one of: ${DEVICE_KINDS.join(", ")}`;
  }
  if (options.listen === undefined) return undefined;
  if (options.nbdDevice !== undefined) return `a device path (${options.nbdDevice}) only applies to the kernel path, not to --listen`;
  try {
    parseListenAddress(options.listen);
  } catch (error) {
    if (error instanceof AddressError) return `--listen: ${error.message}`;
    throw error;
  }
  return undefined;
}

export async function main(argv: readonly string[]): Promise<number> {
  const checking = argv[0] === "check";
  let options: CliOptions;
  try {
    options = parseFlags(checking ? argv.slice(1) : argv);
  } catch (error) {
    if (error instanceof UsageError) return usage(error.message);
    throw error;
  }
  if (options.help) {
    process.stdout.write(helpText(VERSION, DEVICE_KINDS.map((name) => ({ name, description: deviceKinds[name].description }))));
    return EXIT_OK;
  }
  if (options.version) {
    process.stdout.write(`usbd-tui ${VERSION}\n`);
    return EXIT_OK;
  }
  const problem = checking ? checkUsageProblem(options) : validate(options);
  if (problem !== undefined) return usage(problem);
  if (checking) {
    return runCheck(options, { out: (line) => process.stdout.write(`${line}\n`), err: (line) => process.stderr.write(`${line}\n`) });
  }
  if (options.repair) return usage("--repair only applies to usbd-tui check");

  if (options.listen === undefined) {
    // Before the device is created: a store must not be made for a kernel that cannot take it.
    try {
      await prepareKernel(options.nbdMaxDevs);
    } catch (error) {
      if (error instanceof KernelUsageError) return usage(error.message);
      throw error;
    }
  }

  const log: Logger = options.json ? jsonLogger(options.logLevel) : textLogger(options.logLevel);
  const host = new Host(log);
  try {
    const kind = deviceKinds[options.devType as keyof typeof deviceKinds];
    // Private by default: stores hold users' data (and later, keys).
    if (kind.persistent) mkdirSync(options.storeDir, { recursive: true, mode: 0o700 });
    const device = await createDevice(options.devType, {
      size: options.storeSizeGiven || !kind.persistent ? options.storeSize : undefined,
      defaultSize: options.storeSize,
      blockSize: options.blockSize,
      storeDir: options.storeDir,
      storeName: options.storeName,
      dedup: { blockSize: options.dedupBlockSize, compression: options.dedupCompress, memoryCache: options.dedupMemcache },
      objstore: objstoreOptions(options.objstore),
      log,
    });
    host.add(options.exportName, device);
    return await runHeadless(host, options, VERSION, log, { out: (line) => process.stdout.write(`${line}\n`) });
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    await host.stop({ force: true }).catch(() => undefined);
    // A bad --objstore-cfg or a wrong or missing key is a mistake in the command, not a failure of the device.
    if (error instanceof ListenError || error instanceof KernelUsageError || error instanceof ObjectStoreConfigError || error instanceof KeyError) {
      return usage(message);
    }
    log.log("error", message);
    return EXIT_FAILURE;
  }
}
