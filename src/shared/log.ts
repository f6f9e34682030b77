/**
 * The logging seam shared by the engine, the devices and the faces (a neutral folder, so no folder imports one that
 * imports it back): the CLI decides where lines go and in which form, the rest only says what happened. Three forms:
 * logfmt (`time=... level=info msg="flush done" device=vm1`, values quoted where they need it), the same without the
 * time and with a syslog priority prefix for journald (`<6>msg="flush done" device=vm1`), and JSON lines.
 */

export type LogLevel = "debug" | "info" | "warn" | "error";

const ORDER: Readonly<Record<LogLevel, number>> = { debug: 0, info: 1, warn: 2, error: 3 };
/** syslog priorities (sd-daemon(3)): what journald reads from a `<N>` prefix. */
const PRIORITY: Readonly<Record<LogLevel, number>> = { debug: 7, info: 6, warn: 4, error: 3 };

export interface Logger {
  log(level: LogLevel, message: string, fields?: Readonly<Record<string, unknown>>): void;
}

/** A logfmt value: bare when it is safe to split on spaces and `=`, else quoted with `\\`, `"` and newlines escaped. */
export function logfmtValue(value: unknown): string {
  const text = typeof value === "string" ? value : value === undefined ? "" : JSON.stringify(value);
  if (text !== "" && /^[^\s="\\]+$/.test(text)) return text;
  return `"${text.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n").replace(/\r/g, "\\r").replace(/\t/g, "\\t")}"`;
}

function logfmtFields(fields: Readonly<Record<string, unknown>> | undefined): string {
  if (fields === undefined) return "";
  return Object.entries(fields)
    .map(([k, v]) => ` ${k.replace(/[^A-Za-z0-9_.-]/g, "_")}=${logfmtValue(v)}`)
    .join("");
}

/** logfmt lines on stderr: `time=2026-11-25T01:02:03.456Z level=info msg="flush done in 3 ms" device=vm1`. */
export function textLogger(minimum: LogLevel = "info", write: (line: string) => void = (l) => process.stderr.write(l)): Logger {
  return {
    log(level, message, fields) {
      if (ORDER[level] < ORDER[minimum]) return;
      write(`time=${new Date().toISOString()} level=${level} msg=${logfmtValue(message)}${logfmtFields(fields)}\n`);
    },
  };
}

/** For journald (stderr connected to the journal): a priority prefix, no timestamp (the journal adds its own). */
export function journalLogger(minimum: LogLevel = "info", write: (line: string) => void = (l) => process.stderr.write(l)): Logger {
  return {
    log(level, message, fields) {
      if (ORDER[level] < ORDER[minimum]) return;
      write(`<${PRIORITY[level]}>msg=${logfmtValue(message)}${logfmtFields(fields)}\n`);
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
