/**
 * Getting the kernel ready to attach: root privileges (CAP_SYS_ADMIN) and the nbd module, loaded with modprobe
 * when it is missing. Each failure is a KernelUsageError whose one-line message says why and names --listen, the
 * way in that needs neither.
 */
import { hasSysAdmin, nbdModuleLoaded } from "./sysfs.ts";

/** A reason the kernel path cannot be used as asked; the CLI prints it and exits 2. */
export class KernelUsageError extends Error {
  override readonly name = "KernelUsageError";
}

const LISTEN_HINT =
  "serve over a socket instead with --listen unix:/tmp/usbd.sock (or --listen tcp:127.0.0.1:10809) and connect with nbdfuse, qemu or nbd-client";

const SBIN_PATH = "/usr/local/sbin:/usr/sbin:/sbin";

export function requireSysAdmin(): void {
  if (!hasSysAdmin()) {
    throw new KernelUsageError(`attaching to the kernel NBD driver needs root (CAP_SYS_ADMIN): run it with sudo, or ${LISTEN_HINT}`);
  }
}

/** Loads nbd.ko with `nbds_max` preallocated devices unless it is already there. */
export async function ensureNbdModule(nbdsMax: number): Promise<void> {
  if (nbdModuleLoaded()) return;
  const command = ["modprobe", "nbd", `nbds_max=${nbdsMax}`];
  let detail: string;
  try {
    const proc = Bun.spawn(command, {
      stdin: "ignore",
      stdout: "ignore",
      stderr: "pipe",
      env: { ...process.env, PATH: `${process.env.PATH ?? ""}:${SBIN_PATH}` },
    });
    const [stderr, code] = await Promise.all([new Response(proc.stderr).text(), proc.exited]);
    if (code === 0 && nbdModuleLoaded()) return;
    detail = stderr.trim().split("\n").pop() || `exit status ${code}`;
  } catch (error) {
    detail = error instanceof Error ? error.message : String(error);
  }
  throw new KernelUsageError(
    `this kernel has no NBD driver: \`${command.join(" ")}\` failed (${detail.replace(/\s+/g, " ")}); ${LISTEN_HINT}`,
  );
}
