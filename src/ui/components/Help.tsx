/** The `?` screen: every key and what it does, so nothing has to be memorised. */
import { Box, Text } from "ink";
import { useTheme } from "../theme.ts";
import { toneProps } from "./segments.tsx";

const HELP: ReadonlyArray<readonly [string, string]> = [
  ["↑ ↓ / tab / shift-tab", "select a device (j and k work too)"],
  ["f", "flush the selected device: everything written so far becomes durable; shows the duration"],
  ["t", "trim: fstrim on its mount point when the kernel device is mounted, else reclaim space inside the device (asks first)"],
  ["d", "detach: flush, disconnect its clients or the kernel, close (asks first; refused while mounted)"],
  ["q / ctrl-c", "quit: asks first while devices are attached, then flushes, disconnects and closes every device"],
  ["?", "this help; any key closes it"],
];

export function Help({ columns }: { readonly columns: number }) {
  const theme = useTheme();
  const keyWidth = Math.max(...HELP.map(([k]) => k.length));
  return (
    <Box flexDirection="column" borderStyle="single" paddingX={1} width={columns}>
      <Text bold {...toneProps("accent", theme)}>
        keys
      </Text>
      {HELP.map(([key, text]) => (
        <Text key={key} wrap="wrap">
          <Text bold>{key.padEnd(keyWidth)}</Text>
          {`  ${text}`}
        </Text>
      ))}
      <Text> </Text>
      <Text wrap="wrap">Scripts: SIGUSR1 flushes every device; SIGINT or SIGTERM shut down in the same safe order as q.</Text>
    </Box>
  );
}
