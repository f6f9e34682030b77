/**
 * Text measured in terminal columns, not UTF-16 code units: a wide character (CJK, most emoji) takes two columns,
 * a combining mark none. Width comes from string-width and wrapping from wrap-ansi, as in Ink's own text layout,
 * so what these functions cut or wrap is what Ink draws.
 */
import stringWidth from "string-width";
import wrapAnsi from "wrap-ansi";

/** Columns `text` takes in a terminal. */
export function textWidth(text: string): number {
  return stringWidth(text);
}

/** Cuts `text` to `width` columns, marking the cut with an ellipsis; a wide character never straddles the edge. */
export function fit(text: string, width: number): string {
  if (width <= 0) return "";
  if (stringWidth(text) <= width) return text;
  if (width === 1) return "…";
  let out = "";
  let used = 0;
  for (const { segment } of new Intl.Segmenter().segment(text)) {
    const w = stringWidth(segment);
    if (used + w > width - 1) break;
    out += segment;
    used += w;
  }
  return `${out}…`;
}

/** Pads `text` with spaces to `width` columns (text already that wide or wider is left as it is). */
export function padEnd(text: string, width: number): string {
  return text + " ".repeat(Math.max(0, width - stringWidth(text)));
}

/** Pads `text` on the left to `width` columns. */
export function padStart(text: string, width: number): string {
  return " ".repeat(Math.max(0, width - stringWidth(text))) + text;
}

/**
 * Word-wraps `text` into lines of at most `width` columns (a word longer than a line is broken); with `maxLines`,
 * the last line kept ends in an ellipsis when text was left out.
 */
export function wrap(text: string, width: number, maxLines = Infinity): string[] {
  if (width <= 0) return [];
  const lines = wrapAnsi(text, width, { hard: true, trim: true }).split("\n");
  if (lines.length <= maxLines) return lines;
  const kept = lines.slice(0, Math.max(1, maxLines));
  kept[kept.length - 1] = fit(`${kept[kept.length - 1]!} …`, width);
  return kept;
}
