/**
 * Where the CLI's log lines go: stderr in headless mode (logfmt, JSON lines with --json, or journald's form when
 * stderr is the journal), only --log-file while the dashboard owns the terminal, and with --log-file also appended
 * to that file in either mode.
 */
import { appendFileSync, fstatSync } from "node:fs";
import { type Logger, journalLogger, jsonLogger, textLogger } from "../shared/log.ts";
import { DashboardLog } from "../ui/log-sink.ts";
import type { CliOptions } from "./flags.ts";

function tee(a: Logger, b: Logger | undefined): Logger {
  if (b === undefined) return a;
  return {
    log(level, message, fields) {
      a.log(level, message, fields);
      b.log(level, message, fields);
    },
  };
}

/** Appends each line to `path`; a line that cannot be written is dropped rather than crash the daemon. */
function fileLogger(options: CliOptions, path: string): Logger {
  const write = (line: string) => {
    try {
      appendFileSync(path, line, { mode: 0o600 });
    } catch {
      // The file is a copy of what the terminal shows: losing it must not stop the devices.
    }
  };
  return options.json ? jsonLogger(options.logLevel, write) : textLogger(options.logLevel, write);
}

/**
 * Whether stderr is connected to the journal: systemd sets JOURNAL_STREAM to the stream's `device:inode`, and a
 * stderr that is still that stream (not redirected by a wrapper) is what it describes.
 */
export function stderrIsJournal(env: Readonly<Record<string, string | undefined>> = process.env, fd = 2): boolean {
  const match = /^(\d+):(\d+)$/.exec(env.JOURNAL_STREAM ?? "");
  if (match === null) return false;
  try {
    const stat = fstatSync(fd, { bigint: true });
    return stat.dev === BigInt(match[1]!) && stat.ino === BigInt(match[2]!);
  } catch {
    return false;
  }
}

/** The headless logger: stderr (JSON lines with --json; the journal's form under journald; logfmt), plus the file. */
export function headlessLogger(options: CliOptions): Logger {
  const stderr = options.json ? jsonLogger(options.logLevel) : stderrIsJournal() ? journalLogger(options.logLevel) : textLogger(options.logLevel);
  return tee(stderr, options.logFile === undefined ? undefined : fileLogger(options, options.logFile));
}

/** The dashboard's logger: warnings and errors to its event pane, every line at --log-level to the file. */
export function dashboardLogger(options: CliOptions): DashboardLog {
  return options.logFile === undefined ? new DashboardLog(options.logLevel) : new DashboardLog(options.logLevel, fileLogger(options, options.logFile));
}
