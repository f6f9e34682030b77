/**
 * What a daemon runs: its devices (how to create each and, on the kernel path, how to attach it) and where they are
 * served. The CLI builds a plan from flags and a --config file; the daemon and its faces only read it.
 */
import type { DeviceOptions } from "../devices/index.ts";
import type { ListenAddress } from "../engine/address.ts";
import type { KernelAttachOptions } from "../engine/kernel/attach.ts";
import type { ListenOptions } from "../engine/listen.ts";
import type { TlsServerConfig } from "../engine/tls.ts";

export interface DeviceSpec {
  /** The export name, the name in logs, events and stats. Unique in a plan. */
  readonly name: string;
  /** The device kind (`--dev-type`), one of the registry's kinds. */
  readonly kind: string;
  /** What the kind is created from (the logger is added by the daemon). */
  readonly options: Omit<DeviceOptions, "log">;
  /** The kernel attach options for this device; undefined when the plan serves over a socket. */
  readonly kernel: KernelAttachOptions | undefined;
}

export interface DaemonPlan {
  /** Shown in banners and the dashboard. */
  readonly version: string;
  readonly devices: readonly DeviceSpec[];
  /** Serve every device as an export of one socket; undefined attaches each to the kernel as /dev/nbdN. */
  readonly listen: ListenAddress | undefined;
  /** Detach at shutdown even while a kernel device is mounted. */
  readonly force: boolean;
  /** The process-wide memory budget for client data, in bytes (--max-buffer). */
  readonly maxBuffer: number;
  /** The listener's limits (--max-connections, --handshake-timeout, --socket-group). */
  readonly listenLimits: Pick<ListenOptions, "maxConnections" | "handshakeTimeoutMs" | "socketGroup">;
  /** TLS on the listener (--tls on|require with its credentials); absent: plain text only. */
  readonly tls?: TlsServerConfig;
  /** The control socket's path (`usbd-tui ctl`, `usbd-tui top`); undefined for none (`--control none`). */
  readonly control: string | undefined;
  /** `--metrics tcp:HOST:PORT`: where /metrics is served; undefined for nowhere. */
  readonly metrics: string | undefined;
  /** `--pid-file`: where the daemon's pid is written once it serves. */
  readonly pidFile: string | undefined;
}
