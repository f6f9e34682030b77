/**
 * The `usbd-tui` entry point: parse flags, open the device, then run headless (the dashboard arrives with its own
 * issue). Maps every failure to the documented exit codes: 0 clean, 1 runtime failure, 2 usage error.
 */
import { existsSync, mkdirSync } from "node:fs";
import { DEVICE_KINDS, createDevice, deviceKinds, isDeviceKind } from "../devices/index.ts";
import { AddressError, parseListenAddress } from "../engine/address.ts";
import { Host } from "../engine/host.ts";
import { ListenError } from "../engine/listen.ts";
import { type Logger, jsonLogger, textLogger } from "../engine/log.ts";
import { type CliOptions, UsageError, helpText, parseFlags } from "./flags.ts";
import { runHeadless } from "./headless.ts";
import { VERSION } from "./version.ts";

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

/** Why the kernel path cannot be used here, in one sentence that names the alternative. */
function kernelUnavailableMessage(): string {
  const hasDriver = existsSync("/sys/module/nbd") || existsSync("/dev/nbd0");
  const why = hasDriver
    ? "attaching to the kernel NBD driver is not available in this version of usbd-tui"
    : "this machine's kernel has no NBD driver loaded (no /sys/module/nbd, no /dev/nbd0)";
  return `${why}; serve over a socket instead with --listen unix:/tmp/usbd.sock (or --listen tcp:127.0.0.1:10809) and connect with nbdfuse, qemu or nbd-client`;
}

function usage(message: string): number {
  process.stderr.write(`usbd-tui: ${message}\n`);
  return EXIT_USAGE;
}

function validate(options: CliOptions): string | undefined {
  if (!isDeviceKind(options.devType)) {
    return `unknown device type "${options.devType}"; --dev-type must be one of: ${DEVICE_KINDS.join(", ")}`;
  }
  if (options.listen === undefined) return kernelUnavailableMessage();
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
  let options: CliOptions;
  try {
    options = parseFlags(argv);
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
  const problem = validate(options);
  if (problem !== undefined) return usage(problem);

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
    });
    host.add(options.exportName, device);
    return await runHeadless(host, options, VERSION, log, { out: (line) => process.stdout.write(`${line}\n`) });
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    log.log("error", message);
    await host.stop().catch(() => undefined);
    return error instanceof ListenError ? EXIT_USAGE : EXIT_FAILURE;
  }
}
