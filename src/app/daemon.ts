/**
 * A running daemon: the Host with the plan's devices, served over a socket or to the kernel, the signals that
 * steer it, and its shutdown in the safe order. Every face (headless, the dashboard, --run, the control socket)
 * drives the same Daemon; none of them wires devices, listeners or signals itself.
 */
import { describeAddress } from "../engine/address.ts";
import { Host, unsettledLine } from "../engine/host.ts";
import { DetachRefusedError } from "../engine/kernel/attachment.ts";
import type { Logger } from "../shared/log.ts";
import { EXIT_FAILURE, EXIT_OK, EXIT_UNSETTLED } from "./exit-codes.ts";
import { type ControlServer, startControlServer } from "./control/server.ts";
import type { DaemonInfo } from "./control/protocol.ts";
import { type MetricsEndpoint, startMetricsEndpoint } from "./metrics/endpoint.ts";
import { openDevices } from "./open-devices.ts";
import { checkPidFile, removePidFile, writePidFile } from "./pid-file.ts";
import { type Notifier, noNotifier } from "./systemd.ts";
import { serviceStatus } from "./stats-lines.ts";
import type { DaemonPlan } from "./plan.ts";
import { type ServedDevice, serveDevices } from "./serve.ts";

/** Why a shutdown was asked for: a signal, the dashboard's quit, `usbd-tui ctl stop`, the end of --run's command, or nothing left to serve. */
export type StopReason = "SIGINT" | "SIGTERM" | "quit" | "control" | "command" | "gone";

export type StopOutcome =
  /**
   * Every device is shut down; `code` is the exit code: 0, or EXIT_UNSETTLED when a device kept writes its store
   * did not take (`notes` says how much, where, and that they go up at the next start).
   */
  | { readonly kind: "stopped"; readonly code: number; readonly notes: readonly string[] }
  /** A mounted kernel device refused: nothing changed and the daemon keeps serving. */
  | { readonly kind: "refused"; readonly message: string }
  /** The shutdown ran but a device could not be flushed or closed. */
  | { readonly kind: "failed"; readonly code: number; readonly message: string };

/** A shutdown starting, or refused (the daemon keeps serving), for the faces to show. */
export type StopChange =
  | { readonly kind: "stopping"; readonly reason: StopReason }
  | { readonly kind: "refused"; readonly reason: StopReason; readonly message: string };

export interface DaemonOptions {
  /** Shut down once no device is served any more (the kernel let go of each, or each was detached). */
  readonly endWhenNothingServed?: boolean;
  /** Tells systemd about readiness, status and stopping (see systemd.ts); none by default. */
  readonly notifier?: Notifier;
}

/** How often systemd's STATUS= line is refreshed while serving. */
const STATUS_EVERY_MS = 10_000;

export class Daemon {
  readonly host: Host;
  /** Resolves with the outcome of the shutdown that ended the daemon ("stopped" or "failed", never "refused"). */
  readonly finished: Promise<Exclude<StopOutcome, { kind: "refused" }>>;
  private finish: (outcome: Exclude<StopOutcome, { kind: "refused" }>) => void = () => undefined;
  private startup: Promise<unknown> = Promise.resolve();
  private stopping: Promise<StopOutcome> | undefined;
  private ended = false;
  private readonly stopListeners = new Set<(change: StopChange) => void>();
  private readonly disposers: Array<() => void> = [];
  private control: ControlServer | undefined;
  /** Set by --run: SIGINT and SIGTERM go to its command, and the shutdown follows the command's exit. */
  private stopSignalsTo: ((signal: "SIGINT" | "SIGTERM") => void) | undefined;
  private metrics: MetricsEndpoint | undefined;
  readonly startedAt = Date.now();

  constructor(
    readonly plan: DaemonPlan,
    readonly log: Logger,
    private readonly options: DaemonOptions = {},
  ) {
    this.host = new Host(log);
    this.finished = new Promise((resolve) => (this.finish = resolve));
  }

  /**
   * Opens the plan's devices (not served yet). On a failure the devices opened so far are flushed and closed, and
   * the OpenDeviceError naming the device is thrown.
   */
  open(): Promise<void> {
    const opened = (async () => {
      if (this.plan.pidFile !== undefined) checkPidFile(this.plan.pidFile);
      try {
        await openDevices(this.plan.devices, this.host);
      } catch (error) {
        await this.host.stop({ force: true }).catch(() => undefined);
        throw error;
      }
    })();
    this.startup = opened.catch(() => undefined);
    return opened;
  }

  /**
   * Serves every device (see serveDevices). A stop asked for meanwhile waits for this to finish; after a stop was
   * asked for, nothing more is served.
   */
  async serve(): Promise<ServedDevice[]> {
    if (this.isStopping) return [];
    const served = (async () => {
      if (this.plan.control !== undefined) this.control = await startControlServer(this.plan.control, this.controlTarget(), this.log);
      if (this.plan.metrics !== undefined) this.metrics = startMetricsEndpoint(this.plan.metrics, { host: this.host, version: this.plan.version, startedAt: this.startedAt }, this.log);
      return serveDevices(this.host, this.plan);
    })();
    this.startup = served.catch(() => undefined);
    const result = await served;
    this.watchServed();
    this.ready();
    return result;
  }

  /**
   * Shuts every device down in the safe order (stop accepting, finish in-flight requests, flush, disconnect,
   * close). A mounted kernel device refuses unless `force` (or the plan's --force): then nothing changes and the
   * outcome is "refused". Callers during a running shutdown share its outcome.
   */
  stop(reason: StopReason, options: { readonly force?: boolean } = {}): Promise<StopOutcome> {
    if (this.stopping !== undefined) return this.stopping;
    const force = options.force ?? this.plan.force;
    const attempt = (async (): Promise<StopOutcome> => {
      await this.startup;
      for (const listener of this.stopListeners) listener({ kind: "stopping", reason });
      this.notifier.notify({ STOPPING: "1", STATUS: `stopping (${reason}): finishing requests, then flush and close` });
      if (reason === "SIGINT" || reason === "SIGTERM") {
        const kernel = this.plan.listen === undefined ? ", disconnect" : "";
        this.log.log("info", `${reason}: stopping (finishing in-flight requests, then flush${kernel} and close)`);
      }
      try {
        await this.host.stop({ force });
      } catch (error) {
        if (error instanceof DetachRefusedError) return { kind: "refused", message: error.message };
        return { kind: "failed", code: 1, message: error instanceof Error ? error.message : String(error) };
      }
      const notes = this.host.unsettled().map(({ device, data }) => `${device}: ${unsettledLine(data)}`);
      const gone = reason === "gone" && !this.host.list().every((d) => d.state === "detached");
      return { kind: "stopped", code: gone ? EXIT_FAILURE : notes.length > 0 ? EXIT_UNSETTLED : EXIT_OK, notes };
    })();
    this.stopping = attempt;
    void attempt.then(async (outcome) => {
      if (outcome.kind === "refused") {
        // Still serving: the next request may try again.
        this.stopping = undefined;
        for (const listener of this.stopListeners) listener({ kind: "refused", reason, message: outcome.message });
        this.notifier.notify({ STATUS: `still serving, stop refused: ${outcome.message}` });
        if (reason === "SIGINT" || reason === "SIGTERM") this.log.log("info", "still serving: send SIGINT or SIGTERM again once it is unmounted (or run with --force)");
        return;
      }
      this.ended = true;
      // After the Host: `ctl stop` and `ctl events` see the shutdown to its end.
      await this.control?.close();
      this.metrics?.stop();
      this.stopServing();
      if (outcome.kind === "failed") this.log.log("error", outcome.message);
      else if (outcome.notes.length > 0) this.log.log("warn", `stopped in the safe order, but not everything is in its store (exit ${outcome.code}): ${outcome.notes.join("; ")}`);
      else if (outcome.code === 0) this.log.log("info", "stopped cleanly");
      this.finish(outcome);
    });
    return attempt;
  }

  /** Whether a shutdown is running or done. */
  get isStopping(): boolean {
    return this.stopping !== undefined || this.ended;
  }

  /** Called when a shutdown starts and when one is refused (the dashboard shows both). */
  watchStops(listener: (change: StopChange) => void): () => void {
    this.stopListeners.add(listener);
    return () => this.stopListeners.delete(listener);
  }

  /** Flushes every device still open; failures are logged (and reported as Host events), never thrown. */
  async flushAll(): Promise<void> {
    await this.host.flushAll().catch((error: unknown) => this.log.log("error", `flush failed: ${error instanceof Error ? error.message : String(error)}`));
  }

  /**
   * SIGINT and SIGTERM stop in the safe order (a second one while stopping exits at once), SIGUSR1 flushes every
   * device. Listened for until `dispose`; called before `open`, so a signal during the start is kept (the stop runs
   * once the start is over) rather than lost to the default action.
   */
  handleSignals(): void {
    const onStop = (signal: NodeJS.Signals) => {
      const name = signal === "SIGINT" ? "SIGINT" : "SIGTERM";
      if (this.stopSignalsTo !== undefined && this.stopping === undefined) return this.stopSignalsTo(name);
      if (this.stopping !== undefined) {
        this.log.log("warn", "second signal during shutdown: exiting without waiting");
        process.exit(1);
      }
      void this.stop(name);
    };
    const onFlush = () => {
      this.log.log("info", "SIGUSR1: flushing every device");
      void this.flushAll();
    };
    process.on("SIGINT", onStop);
    process.on("SIGTERM", onStop);
    process.on("SIGUSR1", onFlush);
    this.disposers.push(() => {
      process.off("SIGINT", onStop);
      process.off("SIGTERM", onStop);
      process.off("SIGUSR1", onFlush);
    });
  }

  /** Sends SIGINT and SIGTERM to `handler` instead of stopping (undefined: stop again), for --run's command. */
  redirectStopSignals(handler: ((signal: "SIGINT" | "SIGTERM") => void) | undefined): void {
    this.stopSignalsTo = handler;
  }

  /** Removes the signal handlers and subscriptions, and the control socket; the devices are left as they are. */
  dispose(): void {
    void this.control?.close();
    this.metrics?.stop();
    this.stopServing();
  }

  private get notifier(): Notifier {
    return this.options.notifier ?? noNotifier;
  }

  /** Every device is served: the pid file, READY=1, and the status line from now on. */
  private ready(): void {
    if (this.plan.pidFile !== undefined) writePidFile(this.plan.pidFile);
    const notifier = this.notifier;
    if (!notifier.enabled) return;
    notifier.notify({ READY: "1", MAINPID: String(process.pid), STATUS: serviceStatus(this.host.snapshot(2)) });
    const timer = setInterval(() => notifier.notify({ STATUS: serviceStatus(this.host.snapshot(2)) }), STATUS_EVERY_MS);
    timer.unref?.();
    this.disposers.push(() => clearInterval(timer));
  }

  private stopServing(): void {
    if (this.plan.pidFile !== undefined) removePidFile(this.plan.pidFile);
    for (const dispose of this.disposers.splice(0)) dispose();
  }

  /** What `ctl status` says about the daemon itself. */
  info(): DaemonInfo {
    return {
      version: this.plan.version,
      pid: process.pid,
      startedAt: this.startedAt,
      listen: this.plan.listen === undefined ? undefined : describeAddress(this.plan.listen),
      control: this.plan.control ?? "",
      metrics: this.metrics?.url,
      stopping: this.isStopping,
    };
  }

  private controlTarget() {
    return {
      host: this.host,
      info: () => this.info(),
      stop: async (force: boolean) => {
        const outcome = await this.stop("control", { force: force || this.plan.force });
        if (outcome.kind !== "stopped") throw new Error(outcome.message);
        return outcome.code;
      },
    };
  }

  private watchServed(): void {
    if (!this.options.endWhenNothingServed) return;
    const check = () => {
      if (this.stopping === undefined && !this.ended && this.host.list().every((d) => d.state === "detached" || d.state === "error")) void this.stop("gone");
    };
    this.disposers.push(this.host.subscribe(check));
  }
}
