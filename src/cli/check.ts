/**
 * `usbd-tui check --dev-type=dedup --store-dir DIR --store-name NAME [--repair] [--json]`: verifies a stopped dedup
 * store and optionally repairs it. Exit codes: 0 consistent (or repaired), 1 the store could not be read,
 * 2 usage error, 3 inconsistencies found and left as they are (run again with --repair).
 */
import { EXIT_INCONSISTENT } from "../app/exit-codes.ts";
import { checkDedupStore, type CheckReport } from "../devices/dedup/check.ts";
import { type ProgressOutput, checkProgress } from "./check-progress.ts";
import type { CliOptions } from "./flags.ts";


export interface CheckIo {
  readonly out: (line: string) => void;
  readonly err: (line: string) => void;
  /** Where progress goes while the check runs (stderr); none when absent. */
  readonly progress?: ProgressOutput;
}

/** Why these options cannot run a check, or undefined when they can. */
export function checkUsageProblem(options: CliOptions): string | undefined {
  if (options.devType !== "dedup") return `check works on dedup stores only; pass --dev-type=dedup (got ${options.devType})`;
  if (options.listen !== undefined || options.nbdDevice !== undefined) return "check works on a stopped store; it takes no --listen or device path";
  return undefined;
}

export function runCheck(options: CliOptions, io: CheckIo): number {
  let report: CheckReport;
  const progress = io.progress === undefined ? undefined : checkProgress(io.progress);
  try {
    report = checkDedupStore({ storeDir: options.storeDir, storeName: options.storeName, repair: options.repair, ...(progress ? { onProgress: progress.onProgress } : {}) });
  } catch (error) {
    progress?.done();
    io.err(`usbd-tui check: ${error instanceof Error ? error.message : String(error)}`);
    return 1;
  }
  progress?.done();
  const where = `${options.storeDir}/${options.storeName}`;
  if (options.json) {
    io.out(JSON.stringify({ type: "check", store: where, ...report }));
  } else {
    for (const line of report.problems) io.out(`  ${line}`);
    if (report.problemCount > report.problems.length) io.out(`  ... and ${report.problemCount - report.problems.length} more`);
    const totals = `${report.blocks} blocks, ${report.references} references`;
    if (report.problemCount === 0) io.out(`dedup store ${where}: consistent (${totals})`);
    else if (report.repaired) io.out(`dedup store ${where}: repaired ${report.problemCount} problems (${totals}); ${report.lostBlocks} logical blocks now read as zeros`);
    else io.out(`dedup store ${where}: ${report.problemCount} problems (${totals}); run again with --repair to fix them (${report.lostBlocks} logical blocks would read as zeros)`);
  }
  return report.problemCount > 0 && !report.repaired ? EXIT_INCONSISTENT : 0;
}
