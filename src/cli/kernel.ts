/**
 * The CLI's kernel path: the attach options the flags describe (including where a persistent store keeps its
 * reattach record), and the lines that tell the user what to do with the new /dev/nbdX.
 */
import path from "node:path";
import type { KernelAttachOptions } from "../engine/kernel/attach.ts";
import type { CliOptions } from "./flags.ts";

/**
 * The attach options for the device the flags describe; `persistent` devices get a reattach record, unless they are
 * open read-only: a read-only open never changes the store's directory either (`--reattach /dev/nbdN` still takes a
 * device over after a crash).
 */
export function kernelAttachOptions(options: CliOptions, persistent: boolean): KernelAttachOptions {
  const store = path.join(options.storeDir, options.storeName);
  return {
    devicePath: options.nbdDevice,
    interface: options.nbdInterface,
    connections: options.connections,
    timeoutSeconds: options.nbdTimeout,
    deadConnTimeoutSeconds: options.deadConnTimeout,
    maxDevices: options.nbdMaxDevs,
    reattach: options.reattach,
    stateFile: persistent && !options.access.readOnly ? `${store}.nbd.json` : undefined,
    // The store's path names its data; a device whose data dies with the daemon is named by the daemon instead.
    backend: persistent ? `usbd-tui:${options.devType}:${store}` : `usbd-tui:${options.devType}:${options.exportName}:pid${process.pid}`,
  };
}

export function kernelHints(devicePath: string, name: string): string[] {
  return [
    `  format:   mkfs.ext4 ${devicePath}`,
    `  mount:    mkdir -p /mnt/${name} && mount ${devicePath} /mnt/${name}`,
    `  detach:   umount it, then Ctrl-C or kill -TERM ${process.pid} (a mounted device is never detached without --force)`,
  ];
}
