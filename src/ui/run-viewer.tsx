/**
 * `usbd-tui top`: the dashboard attached to a running daemon through its control socket. Keys act on the daemon;
 * q leaves the viewer and the daemon keeps serving. Resolves with the exit code (0; 1 when the daemon went away).
 */
import { render } from "ink";
import { ControlClient } from "../app/control/client.ts";
import { App, REFRESH_MS } from "./App.tsx";
import { RemoteHost } from "./remote-host.ts";
import { ThemeContext, themeFor } from "./theme.ts";

export async function runViewer(controlPath: string, err: (line: string) => void): Promise<number> {
  const client = await ControlClient.connect(controlPath);
  const host = await RemoteHost.attach(client, REFRESH_MS);
  const target = `pid ${host.daemon.pid}`;
  let finish: (code: number, message?: string) => void = () => undefined;
  const finished = new Promise<{ code: number; message?: string }>((resolve) => (finish = (code, message) => resolve({ code, message })));
  client.onClose(() => finish(1, `the daemon (${target}, ${controlPath}) closed the control connection: it stopped`));
  const ink = render(
    <ThemeContext.Provider value={themeFor(process.env)}>
      <App
        host={host}
        version={host.daemon.version}
        listen={host.daemon.listen}
        mode={{ kind: "viewer", target }}
        startedAt={host.daemon.startedAt}
        onExit={(code, message) => finish(code, message)}
      />
    </ThemeContext.Provider>,
    { alternateScreen: true, interactive: true, incrementalRendering: true, maxFps: 4, exitOnCtrlC: false },
  );
  const result = await finished;
  host.leave();
  ink.unmount();
  await ink.waitUntilExit().catch(() => undefined);
  if (result.message !== undefined) err(`usbd-tui top: ${result.message}`);
  return result.code;
}
