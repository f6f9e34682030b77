/**
 * Which running daemon serves a device: asked of every daemon with a control socket in the default directory, so
 * that a command given a volume's flags (`usbd-tui snapshot create`) can act through the daemon that holds it.
 */
import { ControlClient } from "./client.ts";
import { defaultControlDir, findDaemons } from "./paths.ts";

export interface ServingDaemon {
  readonly control: string;
  readonly pid: number;
}

/** The daemon serving a device named `device` of `kind`, or undefined when none in `dir` does (or answers). */
export async function findServingDaemon(device: string, kind: string, dir = defaultControlDir()): Promise<ServingDaemon | undefined> {
  for (const daemon of findDaemons(dir)) {
    let client: ControlClient | undefined;
    try {
      client = await ControlClient.connect(daemon.path);
      const status = await client.request({ command: "status" });
      if (status.devices.some((d) => d.device === device && d.kind === kind && d.state !== "detached")) return { control: daemon.path, pid: daemon.pid };
    } catch {
      // A daemon that is stopping or does not answer serves nothing we can use.
    } finally {
      client?.close();
    }
  }
  return undefined;
}
