/** How the dashboard shares rows: every terminal size from tiny to tall, one device to many. */
import { describe, expect, test } from "bun:test";
import { CHROME_ROWS, COMPACT_ROWS, layout } from "../../src/ui/layout.ts";

const rowsUsed = (l: ReturnType<typeof layout>, full: readonly number[]) =>
  CHROME_ROWS + 2 + l.eventLines + (l.hidden > 0 ? 1 : 0) + l.modes.reduce((sum, m, i) => sum + (m === "line" ? 1 : m === "compact" ? COMPACT_ROWS : full[l.first + i]!), 0);

describe("layout", () => {
  test("80x24 with two devices: the selected one full, the other compact, events get the rest", () => {
    const full = [11, 11];
    const l = layout({ rows: 24, fullRows: full, selected: 0 });
    expect(l.modes).toEqual(["full", "compact"]);
    expect(l.eventLines).toBeGreaterThanOrEqual(3);
    expect(rowsUsed(l, full)).toBeLessThanOrEqual(24);
  });

  test("the selection decides who gets the full panel", () => {
    expect(layout({ rows: 24, fullRows: [11, 11], selected: 1 }).modes).toEqual(["compact", "full"]);
  });

  test("a tall terminal shows every panel in full", () => {
    const l = layout({ rows: 60, fullRows: [11, 7, 9], selected: 2 });
    expect(l.modes).toEqual(["full", "full", "full"]);
    expect(l.eventLines).toBe(60 - 2 - 2 - 11 - 7 - 9);
  });

  test("more devices than rows: one line each around the selection and a count of the rest", () => {
    const full = new Array<number>(40).fill(8);
    const l = layout({ rows: 24, fullRows: full, selected: 30 });
    expect(l.modes.every((m) => m === "line")).toBe(true);
    expect(l.hidden).toBe(40 - l.modes.length);
    expect(l.first).toBeLessThanOrEqual(30);
    expect(l.first + l.modes.length).toBeGreaterThan(30);
    expect(rowsUsed(l, full)).toBeLessThanOrEqual(24);
  });

  test("never uses more rows than the terminal has, at any size", () => {
    for (let rows = 8; rows <= 50; rows++) {
      for (let count = 1; count <= 6; count++) {
        const full = Array.from({ length: count }, (_, i) => 6 + ((i * 3) % 7));
        for (let selected = 0; selected < count; selected++) {
          const l = layout({ rows, fullRows: full, selected });
          expect(rowsUsed(l, full)).toBeLessThanOrEqual(rows);
          expect(l.first + l.modes.length + (l.hidden > 0 ? 0 : 0)).toBeLessThanOrEqual(count);
        }
      }
    }
  });
});
