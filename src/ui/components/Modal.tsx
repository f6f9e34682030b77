/**
 * A question before an action that cannot be undone, in its own box: the whole question wrapped to the terminal,
 * then its keys, so nothing is cut at 80 columns. It owns y, n and esc while it is shown.
 */
import { Box, Text, useInput } from "ink";
import type { Question } from "../questions.ts";
import { wrap } from "../text.ts";
import { useTheme } from "../theme.ts";
import { toneProps } from "./segments.tsx";

/** The question's lines at this width, and the rows its box takes (lines, the keys line, the borders). */
export function modalLayout(q: Question, columns: number, maxRows: number): { lines: string[]; rows: number } {
  const lines = wrap(q.text, Math.max(10, columns - 4), Math.max(1, maxRows - 3));
  return { lines, rows: lines.length + 3 };
}

export function Modal({ question, columns, maxRows, onAnswer }: { readonly question: Question; readonly columns: number; readonly maxRows: number; readonly onAnswer: (yes: boolean) => void }) {
  const theme = useTheme();
  useInput((input, key) => {
    if (input === "y" || input === "Y") onAnswer(true);
    else if (input === "n" || input === "N" || input === "q" || key.escape || (key.ctrl && input === "c")) onAnswer(false);
  });
  const { lines } = modalLayout(question, columns, maxRows);
  return (
    <Box flexDirection="column" borderStyle="double" paddingX={1} width={columns} {...(theme.warn !== undefined ? { borderColor: theme.warn } : {})}>
      {lines.map((line, i) => (
        <Text key={i} bold wrap="truncate-end">
          {line}
        </Text>
      ))}
      <Text wrap="truncate-end">
        <Text bold inverse>{" y "}</Text>
        {` ${question.yes}   `}
        <Text bold inverse>{" n "}</Text>
        {" / "}
        <Text bold inverse>{" esc "}</Text>
        <Text {...toneProps("dim", theme)}>{" no, keep serving"}</Text>
      </Text>
    </Box>
  );
}
