/** The newest events last: attaches, flushes with their durations, trims, detaches, errors. */
import { Box, Text } from "ink";
import type { PaneEvent } from "../dashboard-host.ts";
import { fit, formatClock } from "../format.ts";
import { useTheme } from "../theme.ts";
import { TitledTop, toneProps } from "./segments.tsx";

export function EventPane({ events, lines, columns }: { readonly events: readonly PaneEvent[]; readonly lines: number; readonly columns: number }) {
  const theme = useTheme();
  const shown = events.slice(-lines);
  const width = columns - 4;
  const nameWidth = Math.min(12, Math.max(0, ...shown.map((e) => e.device.length)));
  return (
    <Box flexDirection="column" width={columns}>
      <TitledTop title={`events (${events.length})`} columns={columns} selected={false} />
      <Box flexDirection="column" borderStyle="single" borderTop={false} paddingX={1} width={columns} height={lines + 1}>
        {shown.length === 0 && <Text {...toneProps("dim", theme)}>nothing yet</Text>}
        {shown.map((e, i) => (
          <Text key={i} wrap="truncate-end" {...toneProps(e.level === "error" ? "error" : undefined, theme)}>
            {fit(`${formatClock(e.time)} ${fit(e.device, nameWidth).padEnd(nameWidth)} ${e.message}`, width)}
          </Text>
        ))}
      </Box>
    </Box>
  );
}
