/** One device: its title in the border, read and write rates with sparklines, latency, its gauges, its error. */
import { Box, Text } from "ink";
import type { DeviceSnapshot } from "../../engine/host-types.ts";
import type { PanelMode } from "../layout.ts";
import { PANEL_FRAME_COLUMNS, deviceRow, errorLines, gaugeLines, latencyLine, panelTitle, readLine, writeLine } from "../panel-model.ts";
import { useTheme } from "../theme.ts";
import { LineText, TitledTop, toneProps } from "./segments.tsx";

export interface DevicePanelProps {
  readonly snapshot: DeviceSnapshot;
  readonly mode: PanelMode;
  readonly selected: boolean;
  readonly columns: number;
}

export function DevicePanel({ snapshot, mode, selected, columns }: DevicePanelProps) {
  const theme = useTheme();
  if (mode === "line") {
    return (
      <Text wrap="truncate-end" bold={selected} {...toneProps(snapshot.state === "error" ? "error" : undefined, theme)}>
        {deviceRow(snapshot, selected, columns)}
      </Text>
    );
  }
  const width = columns - PANEL_FRAME_COLUMNS;
  const titleTone = snapshot.state === "error" ? "error" : snapshot.activity !== undefined || snapshot.state !== "serving" ? "warn" : undefined;
  return (
    <Box flexDirection="column" width={columns}>
      <TitledTop title={panelTitle(snapshot)} columns={columns} selected={selected} tone={titleTone} />
      <Box
        flexDirection="column"
        borderStyle={selected ? "double" : "single"}
        borderTop={false}
        paddingX={1}
        width={columns}
        {...(selected && theme.accent !== undefined ? { borderColor: theme.accent } : {})}
      >
        <LineText line={readLine(snapshot, width)} />
        <LineText line={writeLine(snapshot, width)} />
        {mode === "full" && <LineText line={latencyLine(snapshot, width)} />}
        {mode === "full" && gaugeLines(snapshot, width).map((text, i) => <LineText key={`g${i}`} line={[{ text }]} />)}
        {mode === "full" && errorLines(snapshot, width).map((text, i) => <LineText key={`e${i}`} line={[{ text, tone: "error" }]} />)}
      </Box>
    </Box>
  );
}
