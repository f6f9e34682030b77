/**
 * Runs the dashboard in the terminal until the user quits (or a signal stops it): draws first, so the user sees
 * devices starting, then serves them; SIGINT/SIGTERM shut down in the same safe order as `q`, SIGUSR1 flushes.
 * Resolves with the exit code; errors while serving are thrown after the screen is restored.
 */
import { render } from "ink";
import type { Host } from "../engine/host.ts";
import type { CliOptions } from "../cli/flags.ts";
import { serveDevices, statsLine } from "../cli/headless.ts";
import { App } from "./App.tsx";
import type { DashboardLog } from "./log-sink.ts";
import { ThemeContext, themeFor } from "./theme.ts";

/** The dashboard needs a terminal on both ends: keys in, screen out. */
export function canRunDashboard(stdin: NodeJS.ReadStream, stdout: NodeJS.WriteStream): boolean {
  return stdin.isTTY === true && stdout.isTTY === true;
}

export async function runDashboard(host: Host, options: CliOptions, version: string, log: DashboardLog): Promise<number> {
  const startedAt = Date.now();
  let finish: (code: number, message?: string) => void = () => undefined;
  const finished = new Promise<{ code: number; message?: string }>((resolve) => {
    finish = (code, message) => resolve({ code, message });
  });
  const app = (status?: string) => (
    <ThemeContext.Provider value={themeFor(process.env)}>
      <App host={host} version={version} listen={options.listen} force={options.force} logs={log} status={status} startedAt={startedAt} onExit={finish} />
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
      host.stop({ force: options.force }).then(
        () => finish(1, message),
        (stopError: unknown) => finish(1, `${message}, except: ${stopError instanceof Error ? stopError.message : String(stopError)}`),
      );
    },
  );

  let stopping = false;
  const onStopSignal = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    ink.rerender(app(`${signal}: stopping: finishing requests, then flush, disconnect and close every device…`));
    host.stop({ force: options.force }).then(
      () => finish(0),
      (error: unknown) => {
        stopping = false;
        const message = error instanceof Error ? error.message : String(error);
        if (error instanceof Error && error.name === "DetachRefusedError") ink.rerender(app(`${message}: still serving; unmount it, then quit again`));
        else finish(1, message);
      },
    );
  };
  const onFlushSignal = () => void host.flushAll().catch(() => undefined);
  process.on("SIGINT", onStopSignal);
  process.on("SIGTERM", onStopSignal);
  process.on("SIGUSR1", onFlushSignal);

  try {
    // Printed hints belong to headless mode: here the panels show where each device is served.
    await serveDevices(host, options, version, { out: () => undefined });
    const result = await finished;
    leaving = true;
    ink.unmount();
    await ink.waitUntilExit().catch(() => undefined);
    for (const s of host.snapshot()) process.stdout.write(`${statsLine(s)}\n`);
    if (result.message !== undefined) process.stderr.write(`usbd-tui: ${result.message}\n`);
    return result.code;
  } catch (error) {
    leaving = true;
    ink.unmount();
    throw error;
  } finally {
    process.off("SIGINT", onStopSignal);
    process.off("SIGTERM", onStopSignal);
    process.off("SIGUSR1", onFlushSignal);
  }
}
