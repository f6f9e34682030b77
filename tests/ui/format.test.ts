/** The dashboard's numbers, sparklines, bars and gauges, and the NO_COLOR switch. */
import { describe, expect, test } from "bun:test";
import { formatCount, formatUptime } from "../../src/shared/format-gauge.ts";
import { bar, formatGauge, formatMicros, formatRate, sparkline } from "../../src/ui/format.ts";
import { fit } from "../../src/ui/text.ts";
import { themeFor } from "../../src/ui/theme.ts";

describe("format", () => {
  test("counts, rates, latencies and uptimes stay short", () => {
    expect(formatCount(812)).toBe("812");
    expect(formatCount(1234)).toBe("1.23k");
    expect(formatCount(12_345)).toBe("12.3k");
    expect(formatCount(2_500_000)).toBe("2.5M");
    expect(formatRate(48_200_000)).toBe("48.2 MB/s");
    expect(formatRate(1_234_000_000)).toBe("1234 MB/s");
    expect(formatMicros(45)).toBe("45 us");
    expect(formatMicros(1234)).toBe("1.2 ms");
    expect(formatMicros(3_400_000)).toBe("3.4 s");
    expect(formatUptime(42)).toBe("42s");
    expect(formatUptime(185)).toBe("3m05s");
    expect(formatUptime(7380)).toBe("2h03m");
  });

  test("a sparkline is as wide as asked, flat when idle, scaled to its peak", () => {
    expect(sparkline([], 5)).toBe("▁▁▁▁▁");
    expect(sparkline([0, 0, 0], 3)).toBe("▁▁▁");
    expect(sparkline([1, 2, 4, 8], 4)).toBe("▁▂▄█");
    expect(sparkline([8, 1, 2, 4, 8], 3)).toBe("▂▄█");
    expect(sparkline([5], 3)).toBe("▁▁█");
  });

  test("bars fill in proportion and clamp", () => {
    expect(bar(0.5, 10)).toBe("█████░░░░░");
    expect(bar(2, 4)).toBe("████");
    expect(bar(Number.NaN, 3)).toBe("░░░");
  });

  test("gauges show their unit, and a bar when they have a maximum", () => {
    expect(formatGauge({ name: "dedup ratio", value: 5.018, unit: "ratio" }, 40)).toBe("dedup ratio 5.02x");
    expect(formatGauge({ name: "stored", value: 3 * 1024 * 1024, unit: "bytes" }, 40)).toBe("stored 3 MiB");
    expect(formatGauge({ name: "cache", value: 16 * 2 ** 20, unit: "bytes", max: 64 * 2 ** 20 }, 40)).toBe(`cache ${bar(0.25, 20)} 16 MiB/64 MiB`);
    expect(formatGauge({ name: "cache", value: 1, unit: "bytes", max: 4 }, 14)).toBe("cache 1 B/4 B");
  });

  test("fit cuts with an ellipsis", () => {
    expect(fit("abcdef", 4)).toBe("abc…");
    expect(fit("abc", 4)).toBe("abc");
  });

  test("NO_COLOR (set and not empty) turns every colour off", () => {
    expect(themeFor({ NO_COLOR: "1" }).error).toBeUndefined();
    expect(themeFor({ NO_COLOR: "1" }).accent).toBeUndefined();
    expect(themeFor({ NO_COLOR: "" }).error).toBe("red");
    expect(themeFor({}).read).toBe("green");
  });
});
