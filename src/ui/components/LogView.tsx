/**
 * The `l` screen: every kept event in full (long messages wrapped), scrolled with ↑↓, PgUp/PgDn, Home/End; esc,
 * l or q go back to the panels. It owns its keys while it is shown.
 */
import { Box, Text, useInput } from "ink";
import { useState } from "react";
import type { HostEvent } from "../../engine/host-types.ts";
import { eventLinesWrapped, nameWidth } from "../event-view.ts";
import { useTheme } from "../theme.ts";
import { TitledTop, toneProps } from "./segments.tsx";

export interface LogViewProps {
  readonly events: readonly HostEvent[];
  readonly rows: number;
  readonly columns: number;
  readonly onClose: () => void;
}

export function LogView({ events, rows, columns, onClose }: LogViewProps) {
  const theme = useTheme();
  const width = columns - 4;
  const names = nameWidth(events);
  const lines = events.flatMap((e) => eventLinesWrapped(e, names, width).map((text) => ({ text, level: e.level })));
  const page = Math.max(1, rows - 2);
  // Lines hidden below the view; 0 follows the newest.
  const [fromEnd, setFromEnd] = useState(0);
  const maxFromEnd = Math.max(0, lines.length - page);
  const move = (delta: number) => setFromEnd((n) => Math.min(maxFromEnd, Math.max(0, n + delta)));
  useInput((input, key) => {
    if (key.escape || input === "l" || input === "q") return onClose();
    if (key.upArrow || input === "k") return move(1);
    if (key.downArrow || input === "j") return move(-1);
    if (key.pageUp) return move(page);
    if (key.pageDown) return move(-page);
    if (key.home) return move(lines.length);
    if (key.end) return setFromEnd(0);
  });
  const end = lines.length - Math.min(fromEnd, maxFromEnd);
  const shown = lines.slice(Math.max(0, end - page), end);
  return (
    <Box flexDirection="column" width={columns}>
      <TitledTop title={`log: ${events.length} events · ↑↓ PgUp PgDn Home End · esc closes`} columns={columns} selected={false} />
      <Box flexDirection="column" borderStyle="single" borderTop={false} paddingX={1} width={columns} height={page + 1}>
        {shown.length === 0 && <Text {...toneProps("dim", theme)}>nothing yet</Text>}
        {shown.map((line, i) => (
          <Text key={i} wrap="truncate-end" {...toneProps(line.level === "error" ? "error" : line.level === "warn" ? "warn" : undefined, theme)}>
            {line.text}
          </Text>
        ))}
      </Box>
    </Box>
  );
}
