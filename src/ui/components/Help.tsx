/** The `?` screen: every key and what it does, so nothing has to be memorised. Any key closes it. */
import { Box, Text, useInput } from "ink";
import type { DashboardMode } from "../dashboard-host.ts";
import { useTheme } from "../theme.ts";
import { toneProps } from "./segments.tsx";

function helpLines(mode: DashboardMode): ReadonlyArray<readonly [string, string]> {
  return [
    ["↑ ↓ / tab / shift-tab", "select a device (j and k work too)"],
    ["f", "flush the selected device: everything written so far becomes durable; shows the duration"],
    ["t", "trim: fstrim on its mount point when the kernel device is mounted, else reclaim space inside the device (asks first)"],
    ["d", "detach: flush, disconnect its clients or the kernel, close (asks first; refused while mounted)"],
    ["PgUp / PgDn", "scroll the event pane back and forth (End follows the newest again)"],
    ["l", "the whole log of events, long messages in full"],
    mode.kind === "viewer"
      ? ["q / ctrl-c", `leave this viewer; the daemon (${mode.target}) keeps serving`]
      : ["q / ctrl-c", "quit: asks first (twice while clients are connected), then flushes, disconnects and closes every device"],
    ["?", "this help; any key closes it"],
  ];
}

export function Help({ columns, mode, onClose }: { readonly columns: number; readonly mode: DashboardMode; readonly onClose: () => void }) {
  const theme = useTheme();
  useInput(() => onClose());
  const lines = helpLines(mode);
  const keyWidth = Math.max(...lines.map(([k]) => k.length));
  return (
    <Box flexDirection="column" borderStyle="single" paddingX={1} width={columns}>
      <Text bold {...toneProps("accent", theme)}>
        keys
      </Text>
      {lines.map(([key, text]) => (
        <Text key={key} wrap="wrap">
          <Text bold>{key.padEnd(keyWidth)}</Text>
          {`  ${text}`}
        </Text>
      ))}
      <Text> </Text>
      <Text wrap="wrap">
        Scripts: SIGUSR1 flushes every device; SIGINT or SIGTERM shut down in the same safe order as q; `usbd-tui ctl` does every action from another terminal.
      </Text>
    </Box>
  );
}
