/**
 * The dashboard: header, one panel per device, the event pane and the key bar. It redraws from snapshots a few
 * times a second, lists the daemon's events as they come, and turns keys into actions (asking first for the ones
 * that cannot be undone). All it knows of the daemon is DashboardHost; what a device is doing and its last error
 * come from there, so a viewer attached to a running daemon (`usbd-tui top`) shows the same.
 */
import { Box, useInput, useWindowSize } from "ink";
import { useEffect, useMemo, useState } from "react";
import type { DeviceSnapshot, HostEvent } from "../engine/host-types.ts";
import { Footer, type FooterContent, Header } from "./components/Chrome.tsx";
import { DevicePanel } from "./components/DevicePanel.tsx";
import { EventPane } from "./components/EventPane.tsx";
import { Help } from "./components/Help.tsx";
import { LogView } from "./components/LogView.tsx";
import { Modal, modalLayout } from "./components/Modal.tsx";
import type { DashboardHost, DashboardMode } from "./dashboard-host.ts";
import { type EventScroll, scrollEvents } from "./event-view.ts";
import { CHROME_ROWS, layout } from "./layout.ts";
import { PANEL_FRAME_COLUMNS, fullPanelRows } from "./panel-model.ts";
import { type Question, type Screen, clientList, isLive, question } from "./questions.ts";

/** Rates are averaged over this many complete seconds. */
const RATE_WINDOW_SECONDS = 2;
/** 4 redraws a second at most: live enough to watch, calm enough not to flicker. */
export const REFRESH_MS = 250;
const MAX_EVENTS = 500;
/** How long a notice (a key that could not act) stays in the footer. */
const NOTICE_MS = 4000;

export interface AppProps {
  readonly host: DashboardHost;
  readonly version: string;
  /** The --listen address, when devices are network exports. */
  readonly listen?: string;
  /** --force: quitting detaches kernel devices even while mounted, and asks only once while clients are connected. */
  readonly force?: boolean;
  /** In the daemon (default), or a viewer attached to one. */
  readonly mode?: DashboardMode;
  /** Set by the runner while the daemon stops (a signal, or q). */
  readonly status?: string;
  readonly startedAt: number;
  /** Fixed size for tests; otherwise the terminal's, following resizes. */
  readonly size?: { readonly columns: number; readonly rows: number };
  readonly refreshMs?: number;
  /** Called once the user has quit and every device is shut down (0), the shutdown failed (1), or a viewer left. */
  readonly onExit: (code: number, message?: string) => void;
}

function useSnapshots(host: DashboardHost, refreshMs: number): { snapshots: DeviceSnapshot[]; now: number; refresh: () => void } {
  const [state, setState] = useState(() => ({ snapshots: host.snapshot(RATE_WINDOW_SECONDS), now: Date.now() }));
  const refresh = useMemo(() => () => setState({ snapshots: host.snapshot(RATE_WINDOW_SECONDS), now: Date.now() }), [host]);
  useEffect(() => {
    const timer = setInterval(refresh, refreshMs);
    return () => clearInterval(timer);
  }, [refresh, refreshMs]);
  return { ...state, refresh };
}

function useEvents(host: DashboardHost, onEvent: () => void): HostEvent[] {
  const [events, setEvents] = useState<HostEvent[]>(() => host.recentEvents().slice(-MAX_EVENTS));
  useEffect(
    () =>
      host.subscribe((event) => {
        setEvents((list) => (list.length > 0 && list[list.length - 1]!.seq >= event.seq ? list : [...list.slice(-(MAX_EVENTS - 1)), event]));
        onEvent();
      }),
    [host, onEvent],
  );
  return events;
}

export function App(props: AppProps) {
  const { host, refreshMs = REFRESH_MS, mode = { kind: "daemon" } } = props;
  const terminal = useWindowSize();
  const { columns, rows } = props.size ?? terminal;
  const { snapshots, now, refresh } = useSnapshots(host, refreshMs);
  const events = useEvents(host, refresh);
  const [selectedName, setSelectedName] = useState<string | undefined>(snapshots[0]?.name);
  const [screen, setScreen] = useState<Screen>({ kind: "panels" });
  const [scroll, setScroll] = useState<EventScroll>({ kind: "follow" });
  const [notice, setNotice] = useState<{ readonly text: string; readonly until: number } | undefined>(undefined);

  const selectedIndex = Math.max(0, snapshots.findIndex((s) => s.name === selectedName));
  const selected = snapshots[selectedIndex];
  const tell = (text: string) => setNotice({ text, until: Date.now() + NOTICE_MS });

  const run = (action: () => Promise<unknown>) => {
    action()
      // The daemon reports what it did as events; a refusal before it started (busy, detached) is told here.
      .catch((error: unknown) => tell(error instanceof Error ? error.message : String(error)))
      .finally(refresh);
    refresh();
  };

  const quit = () => {
    if (mode.kind === "viewer") return props.onExit(0);
    setScreen({ kind: "stopping" });
    host.stop({ force: props.force ?? false }).then(
      () => props.onExit(0),
      (error: unknown) => {
        // A mounted kernel device refuses: the daemon reported it; keep serving and let the user act on it.
        if (error instanceof Error && error.name === "DetachRefusedError") setScreen({ kind: "panels" });
        else props.onExit(1, error instanceof Error ? error.message : String(error));
      },
    );
  };

  const answer = (q: Question, yes: boolean) => {
    setScreen({ kind: "panels" });
    if (!yes) return;
    if (q.action === "quit" && !props.force && clientList(snapshots.filter(isLive)).count > 0) {
      return setScreen({ kind: "question", question: question("quit-clients", undefined, snapshots) });
    }
    if (q.action === "quit" || q.action === "quit-clients") return quit();
    if (q.action === "trim") return run(() => host.trim(q.device));
    run(() => host.detach(q.device));
  };

  const eventLinesNow = () => plan.eventLines;
  useInput(
    (input, key) => {
      const move = (step: number) => {
        if (snapshots.length === 0) return;
        setSelectedName(snapshots[(selectedIndex + step + snapshots.length) % snapshots.length]!.name);
      };
      if (key.upArrow || input === "k" || (key.tab && key.shift)) return move(-1);
      if (key.downArrow || input === "j" || key.tab) return move(1);
      if (key.pageUp) return setScroll((s) => scrollEvents(events, s, eventLinesNow(), -1));
      if (key.pageDown) return setScroll((s) => scrollEvents(events, s, eventLinesNow(), 1));
      if (key.end) return setScroll({ kind: "follow" });
      if (input === "?") return setScreen({ kind: "help" });
      if (input === "l") return setScreen({ kind: "log" });
      if (input === "q" || (key.ctrl && input === "c")) {
        if (mode.kind === "viewer" || !snapshots.some(isLive)) return quit();
        return setScreen({ kind: "question", question: question("quit", undefined, snapshots) });
      }
      if (input !== "f" && input !== "t" && input !== "d") return;
      if (selected === undefined) return tell("no device to act on");
      if (!isLive(selected)) return tell(`"${selected.name}" is ${selected.state}: there is nothing to ${input === "f" ? "flush" : input === "t" ? "trim" : "detach"}`);
      if (selected.activity !== undefined) return tell(`"${selected.name}" is ${selected.activity.label}; wait for it to finish`);
      if (input === "f") return run(() => host.flush(selected.name));
      setScreen({ kind: "question", question: question(input === "t" ? "trim" : "detach", selected, snapshots) });
    },
    { isActive: screen.kind === "panels" && props.status === undefined },
  );

  const width = columns;
  const bodyRows = rows - CHROME_ROWS;
  const modal = screen.kind === "question" ? modalLayout(screen.question, width, bodyRows) : undefined;
  const plan = layout({ rows, selected: selectedIndex, reserved: modal?.rows ?? 0, fullRows: snapshots.map((s) => fullPanelRows(s, width - PANEL_FRAME_COLUMNS)) });
  const footer: FooterContent =
    props.status !== undefined
      ? { kind: "status", text: props.status }
      : screen.kind === "stopping"
        ? { kind: "status", text: "stopping: finishing requests, then flush, disconnect and close every device…" }
        : notice !== undefined && notice.until > now
          ? { kind: "notice", text: notice.text }
          : { kind: "keys", ...(mode.kind === "viewer" ? { quitLabel: "leave" } : {}) };
  const header = (
    <Header
      version={props.version}
      uptimeSeconds={(now - props.startedAt) / 1000}
      snapshots={snapshots}
      listen={props.listen}
      {...(mode.kind === "viewer" ? { attachedTo: mode.target } : {})}
      columns={width}
    />
  );

  if (screen.kind === "log") {
    return (
      <Box flexDirection="column" width={width}>
        {header}
        <LogView events={events} rows={bodyRows} columns={width} onClose={() => setScreen({ kind: "panels" })} />
        <Footer content={{ kind: "status", text: "log view: esc, l or q to go back" }} columns={width} />
      </Box>
    );
  }
  return (
    <Box flexDirection="column" width={width}>
      {header}
      {screen.kind === "help" ? (
        <Help columns={width} mode={mode} onClose={() => setScreen({ kind: "panels" })} />
      ) : (
        <>
          {plan.modes.map((panelMode, i) => {
            const index = plan.first + i;
            const s = snapshots[index]!;
            return <DevicePanel key={s.name} snapshot={s} mode={panelMode} selected={index === selectedIndex} columns={width} />;
          })}
          {plan.hidden > 0 && <Footer content={{ kind: "status", text: `+${plan.hidden} more devices: ↑↓ to scroll` }} columns={width} />}
          {screen.kind === "question" && <Modal question={screen.question} columns={width} maxRows={bodyRows} onAnswer={(yes) => answer(screen.question, yes)} />}
          <EventPane events={events} scroll={scroll} lines={plan.eventLines} columns={width} />
        </>
      )}
      <Footer content={footer} columns={width} />
    </Box>
  );
}
