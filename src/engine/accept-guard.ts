/**
 * The listener's limits on who gets in: a connection count (`--max-connections`) and the process's descriptor
 * limit. Bun's accept loop retries at once when accept() fails with EMFILE, which spins a core while the backlog
 * waits; so a connection is refused (accepted and closed at once) while fewer than FD_RESERVE descriptors are left,
 * which keeps accept() itself from ever running out, and a watchdog notices when something else used them up and
 * asks the listener to stop accepting until descriptors are free again. Every refusal is logged, once per episode.
 */
import { closeSync, openSync } from "node:fs";
import type { Logger } from "../shared/log.ts";
import { descriptorLimit } from "../ffi/libc.ts";

/** Descriptors kept free for the rest of the process (device files, store connections, the kernel path). */
export const FD_RESERVE = 32;
/** qemu-nbd serves one client by default and nbdkit any number; 128 is far above what multi-conn clients open. */
export const DEFAULT_MAX_CONNECTIONS = 128;
/** How often the watchdog checks for descriptors, and how often it checks again while out of them. */
const WATCH_MS = 1000;
const RECHECK_MS = 250;

/** Logs the first event of a kind at once and the number of repeats at most once per interval. */
export class ThrottledLog {
  private repeats = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    private readonly log: Logger,
    private readonly intervalMs = 10_000,
  ) {}

  note(message: string, fields?: Readonly<Record<string, unknown>>): void {
    if (this.timer !== undefined) {
      this.repeats++;
      return;
    }
    this.log.log("warn", message, fields);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (this.repeats > 0) this.log.log("warn", `${message} (${this.repeats} more times in the last ${this.intervalMs / 1000} s)`, fields);
      this.repeats = 0;
    }, this.intervalMs);
    this.timer.unref?.();
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}

/** Descriptors that must be free before accepting resumes, so it does not stop again at the next connection. */
const RESUME_ROOM = 8;

/** Whether `count` more descriptors can be opened now (false on EMFILE and ENFILE). */
function descriptorsLeft(count: number): boolean {
  const opened: number[] = [];
  try {
    for (let i = 0; i < count; i++) opened.push(openSync("/dev/null", "r"));
    return true;
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    if (code === "EMFILE" || code === "ENFILE") return false;
    throw error;
  } finally {
    for (const fd of opened) closeSync(fd);
  }
}

export interface AcceptGuardOptions {
  readonly log: Logger;
  readonly maxConnections: number;
  /** Where the listener is, for the log lines. */
  readonly where: string;
  /** Stop and restart accepting (the watchdog calls them; restart may fail and is then tried again later). */
  readonly stopAccepting: () => void;
  readonly startAccepting: () => void;
}

export class AcceptGuard {
  private readonly refusals: ThrottledLog;
  private readonly fdLimit = descriptorLimit();
  private timer: ReturnType<typeof setTimeout> | undefined;
  private accepting = true;
  private stopped = false;

  constructor(private readonly options: AcceptGuardOptions) {
    this.refusals = new ThrottledLog(options.log);
    this.schedule(WATCH_MS);
  }

  /**
   * Why the connection on descriptor `fd` must be refused while `open` others are served, or undefined to serve it.
   * Linux hands out the lowest free descriptor, so a high one means few are left.
   */
  refusal(fd: number | undefined, open: number): string | undefined {
    const { maxConnections, where } = this.options;
    if (open >= maxConnections) {
      return `refused a connection to ${where}: ${maxConnections} connections are open, the most allowed (--max-connections)`;
    }
    if (fd !== undefined && fd >= this.fdLimit - FD_RESERVE) {
      return `refused a connection to ${where}: near the limit of ${this.fdLimit} open files (ulimit -n); raise it or lower --max-connections`;
    }
    return undefined;
  }

  /** Logs a refusal (the first at once, repeats counted). */
  refused(reason: string): void {
    this.refusals.note(reason);
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.refusals.stop();
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => this.watch(), ms);
    this.timer.unref?.();
  }

  private watch(): void {
    const room = descriptorsLeft(this.accepting ? 1 : RESUME_ROOM);
    const { log, where } = this.options;
    if (this.accepting && !room) {
      this.accepting = false;
      log.log("error", `out of file descriptors (EMFILE/ENFILE): ${where} stops accepting until some close; open connections are still served. Raise the limit (ulimit -n ${this.fdLimit * 2}) or lower --max-connections`);
      this.options.stopAccepting();
    } else if (!this.accepting && room) {
      try {
        this.options.startAccepting();
        this.accepting = true;
        log.log("info", `file descriptors are free again: ${where} accepts connections again`);
      } catch (error) {
        log.log("warn", `cannot accept on ${where} again yet: ${error instanceof Error ? error.message : String(error)}`);
      }
    }
    this.schedule(this.accepting ? WATCH_MS : RECHECK_MS);
  }
}
