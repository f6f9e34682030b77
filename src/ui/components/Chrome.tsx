/** The header (version, uptime, where devices are served, totals) and the footer (keys, or the question asked). */
import { Text } from "ink";
import type { DeviceSnapshot } from "../../engine/host.ts";
import { formatCount, formatUptime } from "../../shared/format-gauge.ts";
import { fit, formatRate } from "../format.ts";
import { useTheme } from "../theme.ts";
import { toneProps } from "./segments.tsx";

export interface HeaderProps {
  readonly version: string;
  readonly uptimeSeconds: number;
  readonly snapshots: readonly DeviceSnapshot[];
  /** The --listen address, when devices are network exports. */
  readonly listen: string | undefined;
  readonly columns: number;
}

/** Whether devices are network exports (each panel shows its URI) or kernel devices, and how many are attached. */
function servedWhere(snapshots: readonly DeviceSnapshot[], listen: string | undefined): string {
  if (listen !== undefined) return "network export";
  const kernel = snapshots.filter((s) => s.kernel !== undefined).length;
  return `kernel NBD (${kernel} attached)`;
}

export function Header({ version, uptimeSeconds, snapshots, listen, columns }: HeaderProps) {
  const theme = useTheme();
  const sum = (pick: (s: DeviceSnapshot) => number) => snapshots.reduce((acc, s) => acc + pick(s), 0);
  const live = snapshots.filter((s) => s.state !== "detached").length;
  const devices = live === snapshots.length ? `${live} device${live === 1 ? "" : "s"}` : `${live}/${snapshots.length} devices`;
  const iops = `R ${formatCount(sum((s) => s.metrics.readIops))} W ${formatCount(sum((s) => s.metrics.writeIops))} IOPS`;
  const rate = formatRate(sum((s) => s.metrics.readBytesPerSecond + s.metrics.writeBytesPerSecond));
  const rest = ` · up ${formatUptime(uptimeSeconds)} · ${servedWhere(snapshots, listen)} · ${devices} · ${iops} ${rate}`;
  const name = `usbd-tui ${version}`;
  return (
    <Text wrap="truncate-end">
      <Text bold {...toneProps("accent", theme)}>
        {name}
      </Text>
      {fit(rest, Math.max(0, columns - name.length))}
    </Text>
  );
}

export const KEYS: ReadonlyArray<readonly [string, string]> = [
  ["↑↓/tab", "select"],
  ["f", "flush"],
  ["t", "trim"],
  ["d", "detach"],
  ["q", "quit"],
  ["?", "help"],
];

export type FooterContent = { readonly kind: "keys" } | { readonly kind: "question"; readonly text: string } | { readonly kind: "status"; readonly text: string };

export function Footer({ content, columns }: { readonly content: FooterContent; readonly columns: number }) {
  const theme = useTheme();
  if (content.kind === "question") {
    return (
      <Text wrap="truncate-end" inverse bold>
        {fit(`${content.text}  y: yes · n/esc: no`, columns)}
      </Text>
    );
  }
  if (content.kind === "status") {
    return (
      <Text wrap="truncate-end" {...toneProps("warn", theme)}>
        {fit(content.text, columns)}
      </Text>
    );
  }
  return (
    <Text wrap="truncate-end">
      {KEYS.map(([key, label], i) => (
        <Text key={key}>
          {i > 0 ? "  " : ""}
          <Text bold inverse>{` ${key} `}</Text>
          {` ${label}`}
        </Text>
      ))}
    </Text>
  );
}
