/** Coloured text by meaning (see theme.ts): the shared renderer of the panel model's lines. */
import { Text } from "ink";
import type { Line, Tone } from "../panel-model.ts";
import { fit, textWidth } from "../text.ts";
import { type Theme, useTheme } from "../theme.ts";

export function toneProps(tone: Tone | undefined, theme: Theme): { color?: string; dimColor?: boolean } {
  switch (tone) {
    case undefined:
      return {};
    case "dim":
      return theme.dim ? { dimColor: true } : {};
    default: {
      const color = theme[tone];
      return color === undefined ? {} : { color };
    }
  }
}

export function LineText({ line }: { readonly line: Line }) {
  const theme = useTheme();
  return (
    <Text wrap="truncate-end">
      {line.map((segment, i) => (
        <Text key={i} {...toneProps(segment.tone, theme)}>
          {segment.text}
        </Text>
      ))}
    </Text>
  );
}

const CORNERS = { single: ["┌", "─", "┐"], double: ["╔", "═", "╗"] } as const;

/** A box's top border with a title in it (Ink boxes have no titles): `┌─ title ───────┐`. */
export function TitledTop({ title, columns, selected, tone }: { readonly title: string; readonly columns: number; readonly selected: boolean; readonly tone?: Tone }) {
  const theme = useTheme();
  const [left, fill, right] = CORNERS[selected ? "double" : "single"];
  const shown = fit(title, Math.max(0, columns - 5));
  const rest = Math.max(0, columns - textWidth(shown) - 5);
  const border = toneProps(selected ? "accent" : undefined, theme);
  return (
    <Text wrap="truncate-end">
      <Text {...border}>{`${left}${fill} `}</Text>
      <Text bold={selected} {...toneProps(tone, theme)}>
        {shown}
      </Text>
      <Text {...border}>{` ${fill.repeat(rest)}${right}`}</Text>
    </Text>
  );
}
