// No folder under src/ imports a folder that imports it back (the house in docs/ARCHITECTURE.md): read from the
// imports themselves, so a new one that closes a cycle fails here with the import that did it.
import { describe, expect, test } from "bun:test";
import path from "node:path";
import { type FolderEdge, folderCycles, folderEdges, importSpecifiers } from "./import-graph.ts";

const SRC = path.resolve(import.meta.dir, "../../src");

describe("the folders under src/ form no cycle", () => {
  test("no top-level folder imports one that imports it back", () => {
    const cycles = folderCycles(folderEdges(SRC));
    const report = cycles.map((c) => c.map((e) => `  ${e.from} -> ${e.to} (${e.example})`).join("\n")).join("\n\n");
    expect(report).toBe("");
  });

  test("the faces sit on top: ui does not import cli, engine imports no face, devices import no engine", () => {
    const edges = folderEdges(SRC);
    const has = (from: string, to: string) => edges.some((e) => e.from === from && e.to === to);
    for (const [from, to] of [["ui", "cli"], ["engine", "ui"], ["engine", "cli"], ["engine", "app"], ["devices", "engine"], ["shared", "engine"], ["app", "ui"], ["app", "cli"]] as const) {
      expect(has(from, to), `${from} imports ${to}: ${edges.find((e) => e.from === from && e.to === to)?.example}`).toBe(false);
    }
    // The graph is read at all: the CLI does import the daemon wiring.
    expect(has("cli", "app")).toBe(true);
  });
});

describe("the import reader and the cycle finder", () => {
  test("static, type-only, re-exported and dynamic imports are read; comments are not", () => {
    const source = [
      'import { a } from "../engine/a.ts";',
      'import type { B } from "../devices/b.ts";',
      'export { c } from "./c.ts";',
      'export * from "../shared/d.ts";',
      'import "./side-effect.ts";',
      'const m = await import("../ui/run.tsx");',
      "// imports src/cli, but only in words: import x from \"../cli/never.ts\"",
      '/* import y from "../cli/neither.ts" */',
      "import {",
      "  e,",
      '} from "../app/e.ts";',
    ].join("\n");
    expect(importSpecifiers(source)).toEqual(["../engine/a.ts", "../devices/b.ts", "./c.ts", "../shared/d.ts", "./side-effect.ts", "../app/e.ts", "../ui/run.tsx"].sort((x, y) => source.indexOf(x) - source.indexOf(y)));
  });

  test("a cycle through three folders is found with its edges; a chain is not a cycle", () => {
    const edge = (from: string, to: string): FolderEdge => ({ from, to, example: `${from}/x.ts -> ${to}/y.ts` });
    const cycles = folderCycles([edge("cli", "ui"), edge("ui", "app"), edge("app", "cli"), edge("app", "engine"), edge("engine", "devices")]);
    expect(cycles.length).toBe(1);
    expect(cycles[0]!.map((e) => `${e.from}>${e.to}`).sort()).toEqual(["app>cli", "cli>ui", "ui>app"]);
    expect(folderCycles([edge("cli", "ui"), edge("ui", "engine"), edge("cli", "engine")])).toEqual([]);
  });
});
