/**
 * The engine's logger while the dashboard owns the terminal: a line written to stderr would tear the screen, so
 * warnings and errors become event-pane lines instead, and every line (at the chosen level) can also go to a
 * file. Lines the Host logs for its own events are skipped: the pane lists those events already.
 */
import type { LogLevel, Logger } from "../shared/log.ts";
import type { PaneEvent } from "./dashboard-host.ts";

const ORDER: Readonly<Record<LogLevel, number>> = { debug: 0, info: 1, warn: 2, error: 3 };

export class DashboardLog implements Logger {
  private readonly listeners = new Set<(event: PaneEvent) => void>();
  /** Lines logged before the dashboard subscribed (while devices open), replayed to the first subscriber. */
  private readonly early: PaneEvent[] = [];

  /** `file` receives every line at `minimum` or above; the pane only warnings and errors. */
  constructor(
    private readonly minimum: LogLevel = "info",
    private readonly file?: Logger,
  ) {}

  log(level: LogLevel, message: string, fields?: Readonly<Record<string, unknown>>): void {
    if (ORDER[level] < ORDER[this.minimum]) return;
    this.file?.log(level, message, fields);
    if (ORDER[level] < ORDER.warn || isHostEvent(fields)) return;
    const source = typeof fields?.peer === "string" ? fields.peer : typeof fields?.device === "string" ? fields.device : "-";
    const event: PaneEvent = { time: Date.now(), device: source, level: "error", message };
    if (this.listeners.size === 0) this.early.push(event);
    for (const listener of this.listeners) listener(event);
  }

  subscribe(listener: (event: PaneEvent) => void): () => void {
    this.listeners.add(listener);
    for (const event of this.early.splice(0)) listener(event);
    return () => this.listeners.delete(listener);
  }
}

/** The Host logs each of its events with exactly one field, the device's name. */
function isHostEvent(fields: Readonly<Record<string, unknown>> | undefined): boolean {
  if (fields === undefined) return false;
  const keys = Object.keys(fields);
  return keys.length === 1 && keys[0] === "device";
}
