/**
 * The import graph of src/ by top-level folder (cli, ui, app, engine, devices, ffi, shared, ...), read from the
 * source text: every static import and re-export, type-only ones included, and every dynamic import() of a
 * literal path. Cycles between folders are what the architecture test forbids.
 */
import { readFileSync, readdirSync } from "node:fs";
import path from "node:path";

/** One import of one file by another, across folders. */
export interface FolderEdge {
  readonly from: string;
  readonly to: string;
  /** An example import that makes the edge: `src/ui/run.tsx -> src/cli/headless.ts`. */
  readonly example: string;
}

const SPECIFIER = /(?:^|[;\n}])\s*(?:import|export)\s+(?:type\s+)?(?:[^'"`;]*?\s+from\s+)?["']([^"']+)["']|\bimport\(\s*["']([^"']+)["']\s*\)/g;

/** The module specifiers a source file imports (relative or not), in order. */
export function importSpecifiers(source: string): string[] {
  // Comments may mention imports ("imports src/cli") without being any.
  const code = source.replace(/\/\*[\s\S]*?\*\//g, "").replace(/(^|[^:"'`])\/\/.*$/gm, "$1");
  const out: string[] = [];
  for (const match of code.matchAll(SPECIFIER)) out.push(match[1] ?? match[2]!);
  return out;
}

function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...sourceFiles(full));
    else if (/\.(ts|tsx)$/.test(entry.name)) out.push(full);
  }
  return out;
}

/** The top-level folder of a path inside `src` (a file directly in src/ is its own node, e.g. "index.ts"). */
function folderOf(src: string, file: string): string {
  return path.relative(src, file).split(path.sep)[0]!;
}

/** Every edge between two different top-level folders of `src`, one per folder pair. */
export function folderEdges(src: string): FolderEdge[] {
  const edges = new Map<string, FolderEdge>();
  for (const file of sourceFiles(src)) {
    const from = folderOf(src, file);
    for (const spec of importSpecifiers(readFileSync(file, "utf8"))) {
      if (!spec.startsWith(".")) continue;
      const target = path.resolve(path.dirname(file), spec);
      if (!target.startsWith(src + path.sep)) continue;
      const to = folderOf(src, target);
      if (to === from || edges.has(`${from}>${to}`)) continue;
      edges.set(`${from}>${to}`, { from, to, example: `${path.relative(path.dirname(src), file)} -> ${path.relative(path.dirname(src), target)}` });
    }
  }
  return [...edges.values()];
}

/** The cycles among `edges`: each strongly connected group of two or more folders, with the edges inside it. */
export function folderCycles(edges: readonly FolderEdge[]): FolderEdge[][] {
  const nodes = [...new Set(edges.flatMap((e) => [e.from, e.to]))];
  const next = new Map(nodes.map((n) => [n, edges.filter((e) => e.from === n).map((e) => e.to)] as const));
  // Tarjan's strongly connected components.
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const groups: string[][] = [];
  let counter = 0;
  const visit = (n: string): void => {
    index.set(n, counter);
    low.set(n, counter++);
    stack.push(n);
    onStack.add(n);
    for (const m of next.get(n) ?? []) {
      if (!index.has(m)) {
        visit(m);
        low.set(n, Math.min(low.get(n)!, low.get(m)!));
      } else if (onStack.has(m)) low.set(n, Math.min(low.get(n)!, index.get(m)!));
    }
    if (low.get(n) === index.get(n)) {
      const group: string[] = [];
      let m: string;
      do {
        m = stack.pop()!;
        onStack.delete(m);
        group.push(m);
      } while (m !== n);
      if (group.length > 1) groups.push(group);
    }
  };
  for (const n of nodes) if (!index.has(n)) visit(n);
  return groups.map((g) => edges.filter((e) => g.includes(e.from) && g.includes(e.to)));
}
