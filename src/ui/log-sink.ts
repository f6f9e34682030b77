/**
 * The engine's logger while the dashboard owns the terminal: a line written to stderr would tear the screen, so
 * lines go only to --log-file (when given). Warnings and errors reach the event pane as the daemon's events (the
 * Host turns them into events), not from here.
 */
import { type LogLevel, type Logger, silentLogger } from "../shared/log.ts";

const ORDER: Readonly<Record<LogLevel, number>> = { debug: 0, info: 1, warn: 2, error: 3 };

export class DashboardLog implements Logger {
  /** `file` receives every line at `minimum` or above. */
  constructor(
    private readonly minimum: LogLevel = "info",
    private readonly file: Logger = silentLogger,
  ) {}

  log(level: LogLevel, message: string, fields?: Readonly<Record<string, unknown>>): void {
    if (ORDER[level] >= ORDER[this.minimum]) this.file.log(level, message, fields);
  }
}
