/**
 * The logging seam shared by the engine, the devices and the faces (a neutral folder, so no folder imports one that
 * imports it back): the CLI decides where lines go (stderr text or JSON lines), the rest only says what happened.
 */

export type LogLevel = "debug" | "info" | "warn" | "error";

const ORDER: Readonly<Record<LogLevel, number>> = { debug: 0, info: 1, warn: 2, error: 3 };

export interface Logger {
  log(level: LogLevel, message: string, fields?: Readonly<Record<string, unknown>>): void;
}

/** Human-readable lines on stderr: `2026-11-25T01:02:03.456Z warn  message key=value`. */
export function textLogger(minimum: LogLevel = "info", write: (line: string) => void = (l) => process.stderr.write(l)): Logger {
  return {
    log(level, message, fields) {
      if (ORDER[level] < ORDER[minimum]) return;
      const extra = fields
        ? Object.entries(fields)
            .map(([k, v]) => ` ${k}=${typeof v === "string" ? v : JSON.stringify(v)}`)
            .join("")
        : "";
      write(`${new Date().toISOString()} ${level.padEnd(5)} ${message}${extra}\n`);
    },
  };
}

/** One JSON object per line on stderr, for log collectors. */
export function jsonLogger(minimum: LogLevel = "info", write: (line: string) => void = (l) => process.stderr.write(l)): Logger {
  return {
    log(level, message, fields) {
      if (ORDER[level] < ORDER[minimum]) return;
      write(`${JSON.stringify({ time: new Date().toISOString(), level, message, ...fields })}\n`);
    },
  };
}

/** Discards everything (tests, embedding programs that log elsewhere). */
export const silentLogger: Logger = { log() {} };
