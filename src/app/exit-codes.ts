/** The daemon's exit codes, in one place (README "Exit codes" lists them for users). */

/** Every device shut down and everything written is where it belongs. */
export const EXIT_OK = 0;
/** A runtime failure: a device could not be opened, flushed or closed. */
export const EXIT_FAILURE = 1;
/** A mistake in the command line or config file; nothing was changed. */
export const EXIT_USAGE = 2;
/** `usbd-tui check` found problems and left them (run it again with --repair). */
export const EXIT_INCONSISTENT = 3;
/**
 * Shut down in the safe order, but a device holds accepted writes its store did not take (an unreachable object
 * store): they are durable in its local cache and go up at the next start. Not a failure to lose data over, but one
 * to look at: systemd restarts the unit (Restart=on-failure), which is what uploads them.
 */
export const EXIT_UNSETTLED = 4;
