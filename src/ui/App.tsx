/**
 * The dashboard: header, one panel per device, the event pane and the key bar. It redraws from Host snapshots a
 * few times a second, lists Host events as they come, and turns keys into Host actions (asking first for the
 * ones that cannot be undone). All it knows of the engine is DashboardHost.
 */
import { Box, useInput, useWindowSize } from "ink";
import { useEffect, useMemo, useState } from "react";
import type { DeviceSnapshot } from "../engine/host.ts";
import { Footer, type FooterContent, Header } from "./components/Chrome.tsx";
import { DevicePanel } from "./components/DevicePanel.tsx";
import { EventPane } from "./components/EventPane.tsx";
import { Help } from "./components/Help.tsx";
import { type DashboardHost, type PaneEvent, paneEvent } from "./dashboard-host.ts";
import { type Question, type Screen, isLive, question } from "./questions.ts";
import { layout } from "./layout.ts";
import { PANEL_FRAME_COLUMNS, type RunningAction, fullPanelRows, panelError } from "./panel-model.ts";

/** Rates are averaged over this many complete seconds. */
const RATE_WINDOW_SECONDS = 2;
/** 4 redraws a second at most: live enough to watch, calm enough not to flicker. */
export const REFRESH_MS = 250;
const MAX_EVENTS = 200;

export interface AppProps {
  readonly host: DashboardHost;
  readonly version: string;
  /** The --listen address, when devices are network exports. */
  readonly listen?: string;
  /** Engine warnings and errors for the event pane. */
  readonly logs?: { subscribe(listener: (event: PaneEvent) => void): () => void };
  /** --force: quitting detaches kernel devices even while mounted. */
  readonly force?: boolean;
  /** Set by the runner while it stops everything for a signal. */
  readonly status?: string;
  readonly startedAt: number;
  /** Fixed size for tests; otherwise the terminal's, following resizes. */
  readonly size?: { readonly columns: number; readonly rows: number };
  readonly refreshMs?: number;
  /** Called once the user has quit and every device is shut down (0), or the shutdown failed (1). */
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

export function App(props: AppProps) {
  const { host, refreshMs = REFRESH_MS } = props;
  const terminal = useWindowSize();
  const { columns, rows } = props.size ?? terminal;
  const { snapshots, now, refresh } = useSnapshots(host, refreshMs);
  const [selectedName, setSelectedName] = useState<string | undefined>(snapshots[0]?.name);
  const [events, setEvents] = useState<PaneEvent[]>([]);
  const [actions, setActions] = useState<ReadonlyMap<string, RunningAction>>(new Map());
  const [screen, setScreen] = useState<Screen>({ kind: "panels" });

  useEffect(() => {
    const add = (event: PaneEvent) => {
      setEvents((list) => [...list.slice(-(MAX_EVENTS - 1)), event]);
      refresh();
    };
    const unsubscribeHost = host.subscribe((e) => add(paneEvent(e)));
    const unsubscribeLogs = props.logs?.subscribe(add);
    return () => {
      unsubscribeHost();
      unsubscribeLogs?.();
    };
  }, [host, props.logs, refresh]);

  const selectedIndex = Math.max(0, snapshots.findIndex((s) => s.name === selectedName));
  const selected = snapshots[selectedIndex];
  const lastErrors = useMemo(() => {
    const errors = new Map<string, string>();
    // An error stays on its panel until the device reports something that went well (a flush, a trim, ...).
    for (const e of events) {
      if (e.level === "error") errors.set(e.device, e.message);
      else errors.delete(e.device);
    }
    return errors;
  }, [events]);

  const run = (name: string, label: string, action: () => Promise<unknown>) => {
    setActions((m) => new Map(m).set(name, { label, started: Date.now() }));
    action()
      // The Host reports success and failure as events; an error that it did not report goes to the pane here.
      .catch((error: unknown) => {
        const message = error instanceof Error ? error.message : String(error);
        setEvents((list) => (list.some((e) => e.message.includes(message)) ? list : [...list, { time: Date.now(), device: name, level: "error", message }]));
      })
      .finally(() => {
        setActions((m) => {
          const next = new Map(m);
          next.delete(name);
          return next;
        });
        refresh();
      });
  };

  const quit = () => {
    setScreen({ kind: "stopping" });
    host.stop({ force: props.force ?? false }).then(
      () => props.onExit(0),
      (error: unknown) => {
        const message = error instanceof Error ? error.message : String(error);
        // A mounted kernel device refuses: the Host reported it; keep serving and let the user act on it.
        if (error instanceof Error && error.name === "DetachRefusedError") setScreen({ kind: "panels" });
        else props.onExit(1, message);
      },
    );
  };

  const answer = (q: Question) => {
    setScreen({ kind: "panels" });
    if (q.action === "quit") return quit();
    if (q.action === "trim") return run(q.device, "trimming", () => host.trim(q.device));
    run(q.device, "detaching", () => host.detach(q.device));
  };

  useInput((input, key) => {
    if (screen.kind === "stopping") return;
    if (screen.kind === "help") return setScreen({ kind: "panels" });
    if (screen.kind === "question") {
      if (input === "y" || input === "Y") answer(screen.question);
      else if (input === "n" || input === "N" || key.escape || (key.ctrl && input === "c")) setScreen({ kind: "panels" });
      return;
    }
    const move = (step: number) => {
      if (snapshots.length === 0) return;
      setSelectedName(snapshots[(selectedIndex + step + snapshots.length) % snapshots.length]!.name);
    };
    if (key.upArrow || input === "k" || (key.tab && key.shift)) return move(-1);
    if (key.downArrow || input === "j" || key.tab) return move(1);
    if (input === "?") return setScreen({ kind: "help" });
    if (input === "q" || (key.ctrl && input === "c")) {
      if (!snapshots.some(isLive)) return quit();
      return setScreen({ kind: "question", question: question("quit", undefined, snapshots) });
    }
    if (selected === undefined || !isLive(selected) || actions.has(selected.name)) return;
    if (input === "f") return run(selected.name, "flushing", () => host.flush(selected.name));
    if (input === "t") return setScreen({ kind: "question", question: question("trim", selected, snapshots) });
    if (input === "d") return setScreen({ kind: "question", question: question("detach", selected, snapshots) });
  });

  const width = columns;
  const errors = snapshots.map((s) => panelError(s, lastErrors.get(s.name)));
  const plan = layout({ rows, selected: selectedIndex, fullRows: snapshots.map((s, i) => fullPanelRows(s, width - PANEL_FRAME_COLUMNS, errors[i])) });
  const footer: FooterContent =
    props.status !== undefined
      ? { kind: "status", text: props.status }
      : screen.kind === "question"
        ? { kind: "question", text: screen.question.text }
        : screen.kind === "stopping"
          ? { kind: "status", text: "stopping: finishing requests, then flush, disconnect and close every device…" }
          : { kind: "keys" };

  return (
    <Box flexDirection="column" width={width}>
      <Header version={props.version} uptimeSeconds={(now - props.startedAt) / 1000} snapshots={snapshots} listen={props.listen} columns={width} />
      {screen.kind === "help" ? (
        <Help columns={width} />
      ) : (
        <>
          {plan.modes.map((mode, i) => {
            const index = plan.first + i;
            const s = snapshots[index]!;
            return <DevicePanel key={s.name} snapshot={s} mode={mode} selected={index === selectedIndex} columns={width} action={actions.get(s.name)} error={errors[index]} now={now} />;
          })}
          {plan.hidden > 0 && <Footer content={{ kind: "status", text: `+${plan.hidden} more devices: ↑↓ to scroll` }} columns={width} />}
          <EventPane events={events} lines={plan.eventLines} columns={width} />
        </>
      )}
      <Footer content={footer} columns={width} />
    </Box>
  );
}
