// `usbd-tui --help` as a user reads it: the flags in groups (common, kernel, network, service, one per device kind
// that has flags of its own, check), every flag in exactly one of them, the device kinds, examples that use only
// real flags, and the exit codes the CLI returns.
import { beforeAll, describe, expect, test } from "bun:test";
import { join, resolve } from "node:path";
import { EXIT_FAILURE, EXIT_INCONSISTENT, EXIT_OK, EXIT_UNSETTLED, EXIT_USAGE } from "../../src/app/exit-codes.ts";
import { FLAGS } from "../../src/cli/flags.ts";
import { DEVICE_KINDS } from "../../src/devices/index.ts";
import { runResult } from "../clients/helpers.ts";

const ROOT = resolve(import.meta.dir, "../..");
const CLI = [join(ROOT, "node_modules/.bin/bun"), join(ROOT, "bin/usbd-tui.ts")];

const GROUPS = ["Common", "Kernel (/dev/nbdX)", "Network clients (--listen)", "Running as a service", "dedup device", "objstore device", "usbd-tui check"];

describe("usbd-tui --help", () => {
  let help: string;
  /** Section title -> its lines (a section runs from its `Title:` line to the next blank line). */
  const sections = new Map<string, string[]>();
  /** The flag each `  --name ...` line documents, by section. */
  const flagsIn = (title: string) => (sections.get(title) ?? []).map((l) => /^ {2}--([a-z0-9-]+)/.exec(l)?.[1]).filter((n): n is string => n !== undefined);

  beforeAll(async () => {
    const r = await runResult([...CLI, "--help"]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stderr).toBe("");
    help = r.stdout;
    let current: string[] | undefined;
    for (const line of help.split("\n")) {
      const title = /^(\S.*):$/.exec(line)?.[1];
      if (title !== undefined) sections.set(title, (current = []));
      else if (line === "") current = undefined;
      else current?.push(line);
    }
  });

  test("the flags come in groups, in order: common first, then kernel, network, service, each device kind, check", () => {
    const titles = [...sections.keys()];
    expect(titles).toEqual(["Usage", ...GROUPS, "Device kinds (--dev-type)", "Examples"]);
    expect(flagsIn("Common")).toEqual(expect.arrayContaining(["listen", "dev-type", "store-dir", "store-name", "store-size", "help"]));
    expect(flagsIn("Kernel (/dev/nbdX)")).toEqual(expect.arrayContaining(["nbd-interface", "connections", "nbd-timeout", "dead-conn-timeout", "reattach", "nbd-max-devs"]));
    expect(flagsIn("Running as a service")).toEqual(expect.arrayContaining(["stats-interval", "json", "control", "metrics", "pid-file", "run"]));
    expect(flagsIn("usbd-tui check")).toEqual(["repair"]);
  });

  test("each device kind's flags are in its own group and nowhere else; every flag is listed exactly once", () => {
    expect(flagsIn("dedup device").length).toBeGreaterThan(0);
    expect(flagsIn("dedup device").every((n) => n.startsWith("dedup-"))).toBe(true);
    expect(flagsIn("objstore device").every((n) => n.startsWith("objstore-"))).toBe(true);
    const listed = GROUPS.flatMap(flagsIn);
    expect([...listed].sort()).toEqual(Object.keys(FLAGS).sort());
    expect(new Set(listed).size).toBe(listed.length);
    expect(help).not.toContain("Other flags:");
    for (const group of GROUPS.filter((g) => g !== "dedup device")) expect(flagsIn(group).some((n) => n.startsWith("dedup-"))).toBe(false);
  });

  test("the device kinds are listed, each with a description", () => {
    const kinds = (sections.get("Device kinds (--dev-type)") ?? []).map((l) => /^ {2}(\S+)\s+\S/.exec(l)?.[1]);
    expect(kinds).toEqual([...DEVICE_KINDS]);
  });

  test("the examples run usbd-tui with flags it knows", () => {
    const examples = sections.get("Examples") ?? [];
    expect(examples.length).toBeGreaterThanOrEqual(3);
    expect(examples.every((l) => l.startsWith("  usbd-tui "))).toBe(true);
    const used = examples.flatMap((l) => [...l.matchAll(/(?:^|\s)--([a-z0-9-]+)/g)].map((m) => m[1]!));
    expect(used.length).toBeGreaterThan(0);
    expect(used.filter((n) => !(n in FLAGS))).toEqual([]);
    expect(examples.some((l) => l.includes("--dev-type=dedup"))).toBe(true);
    expect(examples.some((l) => l.includes("usbd-tui ctl"))).toBe(true);
  });

  test("the exit codes section names every code the CLI returns", () => {
    const paragraph = /\nExit codes: ([^]*?)\nSignals:/.exec(help)?.[1]?.replace(/\n/g, " ") ?? "";
    expect(paragraph).toContain(`${EXIT_OK} clean shutdown`);
    expect(paragraph).toContain(`${EXIT_FAILURE} runtime failure`);
    expect(paragraph).toContain(`${EXIT_USAGE} usage error`);
    expect(paragraph).toContain(`${EXIT_INCONSISTENT} check found problems`);
    expect(paragraph).toContain(`${EXIT_UNSETTLED} stopped with writes kept locally for an unreachable object store`);
    expect(paragraph).toContain("--run: the command's status");
  });
});
