/** The newest events last (attaches, flushes, trims, clients, upload rounds, errors), or a page of older ones. */
import { Box, Text } from "ink";
import type { HostEvent } from "../../engine/host-types.ts";
import { type EventScroll, eventLine, eventWindow, nameWidth } from "../event-view.ts";
import { useTheme } from "../theme.ts";
import { TitledTop, toneProps } from "./segments.tsx";

export interface EventPaneProps {
  readonly events: readonly HostEvent[];
  readonly scroll: EventScroll;
  readonly lines: number;
  readonly columns: number;
}

export function EventPane({ events, scroll, lines, columns }: EventPaneProps) {
  const theme = useTheme();
  const view = eventWindow(events, scroll, lines);
  const width = columns - 4;
  const names = nameWidth(view.shown);
  const where = view.newer > 0 ? ` · ${view.newer} newer: PgDn` : view.older > 0 ? " · PgUp: older" : "";
  return (
    <Box flexDirection="column" width={columns}>
      <TitledTop title={`events (${events.length})${where}`} columns={columns} selected={false} />
      <Box flexDirection="column" borderStyle="single" borderTop={false} paddingX={1} width={columns} height={lines + 1}>
        {view.shown.length === 0 && <Text {...toneProps("dim", theme)}>nothing yet</Text>}
        {view.shown.map((e) => (
          <Text key={e.seq} wrap="truncate-end" {...toneProps(e.level === "error" ? "error" : e.level === "warn" ? "warn" : undefined, theme)}>
            {eventLine(e, names, width)}
          </Text>
        ))}
      </Box>
    </Box>
  );
}
