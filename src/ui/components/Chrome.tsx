/** The header (version, uptime, where devices are served, totals) and the footer (keys, a notice, or a status). */
import { Text } from "ink";
import type { DeviceSnapshot } from "../../engine/host-types.ts";
import { formatCount, formatUptime } from "../../shared/format-gauge.ts";
import { formatRate } from "../format.ts";
import { fit, textWidth } from "../text.ts";
import { useTheme } from "../theme.ts";
import { toneProps } from "./segments.tsx";

export interface HeaderProps {
  readonly version: string;
  readonly uptimeSeconds: number;
  readonly snapshots: readonly DeviceSnapshot[];
  /** The --listen address, when devices are network exports. */
  readonly listen: string | undefined;
  /** Set in a viewer: the daemon it is attached to. */
  readonly attachedTo?: string;
  readonly columns: number;
}

/** Whether devices are network exports (each panel shows its URI) or kernel devices, and how many are attached. */
function servedWhere(snapshots: readonly DeviceSnapshot[], listen: string | undefined): string {
  if (listen !== undefined || snapshots.some((s) => s.servedAt?.startsWith("nbd"))) return "network export";
  const kernel = snapshots.filter((s) => s.kernel !== undefined).length;
  if (kernel === 0 && snapshots.every((s) => s.servedAt === undefined)) return "not served yet";
  return `kernel NBD (${kernel} attached)`;
}

/**
 * The header's parts, most important first: the totals stay on a narrow terminal, then the device count, then
 * where they are served, then the uptime. Returns the text after the name, in display order, within `room`.
 */
export function headerText(props: Omit<HeaderProps, "columns" | "version">, room: number): string {
  const { snapshots } = props;
  const sum = (pick: (s: DeviceSnapshot) => number) => snapshots.reduce((acc, s) => acc + pick(s), 0);
  const live = snapshots.filter((s) => s.state !== "detached").length;
  const devices = live === snapshots.length ? `${live} device${live === 1 ? "" : "s"}` : `${live}/${snapshots.length} devices`;
  const totals = `R ${formatCount(sum((s) => s.metrics.readIops))} W ${formatCount(sum((s) => s.metrics.writeIops))} IOPS ${formatRate(sum((s) => s.metrics.readBytesPerSecond + s.metrics.writeBytesPerSecond))}`;
  // [display position, text], listed by priority.
  const parts: Array<readonly [number, string]> = [
    [5, totals],
    [1, props.attachedTo === undefined ? "" : `viewing ${props.attachedTo}`],
    [4, devices],
    [3, servedWhere(snapshots, props.listen)],
    [2, `up ${formatUptime(props.uptimeSeconds)}`],
  ];
  const kept: Array<readonly [number, string]> = [];
  let used = 0;
  for (const part of parts) {
    if (part[1] === "") continue;
    const cost = textWidth(part[1]) + 3;
    if (used + cost > room && kept.length > 0) continue;
    kept.push(part);
    used += cost;
  }
  return fit(kept.sort((a, b) => a[0] - b[0]).map(([, text]) => ` · ${text}`).join(""), room);
}

export function Header(props: HeaderProps) {
  const theme = useTheme();
  const name = `usbd-tui ${props.version}`;
  return (
    <Text wrap="truncate-end">
      <Text bold {...toneProps("accent", theme)}>
        {name}
      </Text>
      {headerText(props, Math.max(0, props.columns - textWidth(name)))}
    </Text>
  );
}

/** The key line: key, what it does. */
export const KEYS: ReadonlyArray<readonly [string, string]> = [
  ["↑↓", "select"],
  ["f", "flush"],
  ["t", "trim"],
  ["d", "detach"],
  ["l", "log"],
  ["q", "quit"],
  ["?", "help"],
];

export type FooterContent =
  | { readonly kind: "keys"; readonly quitLabel?: string }
  | { readonly kind: "notice"; readonly text: string }
  | { readonly kind: "status"; readonly text: string };

/** The keys that fit in `columns`, in order (the last ones are left out first). */
export function keysThatFit(keys: ReadonlyArray<readonly [string, string]>, columns: number): ReadonlyArray<readonly [string, string]> {
  const kept: Array<readonly [string, string]> = [];
  let used = 0;
  for (const [key, label] of keys) {
    const cost = (kept.length > 0 ? 2 : 0) + textWidth(key) + 2 + 1 + textWidth(label);
    if (used + cost > columns) break;
    kept.push([key, label]);
    used += cost;
  }
  return kept;
}

export function Footer({ content, columns }: { readonly content: FooterContent; readonly columns: number }) {
  const theme = useTheme();
  if (content.kind !== "keys") {
    return (
      <Text wrap="truncate-end" {...toneProps("warn", theme)}>
        {fit(content.text, columns)}
      </Text>
    );
  }
  const keys = KEYS.map(([key, label]) => [key, key === "q" && content.quitLabel !== undefined ? content.quitLabel : label] as const);
  return (
    <Text wrap="truncate-end">
      {keysThatFit(keys, columns).map(([key, label], i) => (
        <Text key={key}>
          {i > 0 ? "  " : ""}
          <Text bold inverse>{` ${key} `}</Text>
          {` ${label}`}
        </Text>
      ))}
    </Text>
  );
}
