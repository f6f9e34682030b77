/**
 * Runs the dashboard in the terminal until the daemon is stopped (`q`, or a signal): draws first, so the user sees
 * devices starting, then serves them. Resolves with the daemon's exit code; errors while serving are thrown after
 * the screen is restored.
 */
import { render } from "ink";
import type { Daemon, StopChange } from "../app/daemon.ts";
import { statsLine } from "../app/stats-lines.ts";
import { DetachRefusedError } from "../engine/kernel/attachment.ts";
import { App } from "./App.tsx";
import type { DashboardHost } from "./dashboard-host.ts";
import { ThemeContext, themeFor } from "./theme.ts";

/** The dashboard needs a terminal on both ends: keys in, screen out. */
export function canRunDashboard(stdin: NodeJS.ReadStream, stdout: NodeJS.WriteStream): boolean {
  return stdin.isTTY === true && stdout.isTTY === true;
}

/** The daemon as the dashboard drives it: the Host's state and actions, and quitting as a stop of the whole daemon. */
function localHost(daemon: Daemon): DashboardHost {
  const host = daemon.host;
  return {
    snapshot: (window) => host.snapshot(window),
    recentEvents: () => host.recentEvents(),
    subscribe: (listener) => host.subscribe(listener),
    flush: (name) => host.flush(name),
    trim: (name) => host.trim(name),
    detach: (name) => host.detach(name),
    async stop(options) {
      const outcome = await daemon.stop("quit", options);
      if (outcome.kind === "refused") throw Object.assign(new Error(outcome.message), { name: DetachRefusedError.name });
      if (outcome.kind === "failed") throw new Error(outcome.message);
    },
  };
}

function statusText(change: StopChange): string {
  if (change.kind === "refused") return `${change.message}: still serving; unmount it, then quit again`;
  return `${change.reason === "quit" ? "" : `${change.reason}: `}stopping: finishing requests, then flush, disconnect and close every device…`;
}

export async function runDashboard(daemon: Daemon): Promise<number> {
  const startedAt = Date.now();
  const { plan } = daemon;
  const host = localHost(daemon);
  let finish: (code: number, message?: string) => void = () => undefined;
  const finished = new Promise<{ code: number; message?: string }>((resolve) => {
    finish = (code, message) => resolve({ code, message });
  });
  const listen = plan.listen === undefined ? undefined : plan.listen.kind === "unix" ? `unix:${plan.listen.path}` : `tcp:${plan.listen.host}:${plan.listen.port}`;
  const app = (status?: string) => (
    <ThemeContext.Provider value={themeFor(process.env)}>
      <App host={host} version={plan.version} listen={listen} force={plan.force} status={status} startedAt={startedAt} onExit={() => undefined} />
    </ThemeContext.Provider>
  );
  const ink = render(app(), {
    alternateScreen: true,
    // Decided here (both ends are terminals): Ink would otherwise fall back to printing one final frame under CI=true.
    interactive: true,
    incrementalRendering: true,
    maxFps: 4,
    exitOnCtrlC: false,
  });

  let leaving = false;
  // A bug in a component ends Ink: the devices must still be shut down in the safe order, not left served by a
  // process nobody can see.
  void ink.waitUntilExit().then(
    () => undefined,
    (error: unknown) => {
      if (leaving) return;
      const message = `the dashboard failed (${error instanceof Error ? error.message : String(error)}); devices flushed and closed`;
      void daemon.stop("quit", { force: plan.force }).then((outcome) =>
        finish(1, outcome.kind === "stopped" ? message : `${message}, except: ${outcome.message}`),
      );
    },
  );
  // The shutdown started by q or by a signal: its progress in the footer, its outcome as the exit code.
  const unwatch = daemon.watchStops((change) => ink.rerender(app(change.kind === "refused" && change.reason === "quit" ? undefined : statusText(change))));
  void daemon.finished.then((outcome) =>
    finish(outcome.code, outcome.kind === "failed" ? outcome.message : outcome.notes.length > 0 ? outcome.notes.join("\nusbd-tui: ") : undefined),
  );

  try {
    await daemon.serve();
    const result = await finished;
    leaving = true;
    ink.unmount();
    await ink.waitUntilExit().catch(() => undefined);
    for (const s of daemon.host.snapshot()) process.stdout.write(`${statsLine(s)}\n`);
    if (result.message !== undefined) process.stderr.write(`usbd-tui: ${result.message}\n`);
    return result.code;
  } catch (error) {
    leaving = true;
    ink.unmount();
    throw error;
  } finally {
    unwatch();
  }
}
