/**
 * The keys of a --config file: where each may stand (top level, inside a [[device]] table, or nowhere) and how a
 * TOML value becomes the `--flag=value` argument that parseFlags then checks like any flag.
 */
import { FLAGS, type FlagName } from "./flags.ts";

/** Keys that mean one thing for the whole process: top level (or the command line) only. */
export const GLOBAL_ONLY: ReadonlySet<string> = new Set([
  "listen",
  "headless",
  "json",
  "log-level",
  "log-file",
  "stats-interval",
  "nbd-max-devs",
  "force",
  "max-buffer",
  "max-connections",
  "handshake-timeout",
  "socket-group",
  "tls",
  "tls-certificates",
  "tls-verify-peer",
  "tls-psk",
  "control",
  "metrics",
  "pid-file",
  "run",
]);

/**
 * Keys that name one device's store or kernel device: inside a [[device]] table only. `name` (or its spelling
 * `export-name`) is the export name; `nbd-device` is the flags' positional /dev/nbdN.
 */
export const DEVICE_ONLY: ReadonlySet<string> = new Set(["name", "export-name", "store-name", "reattach", "nbd-device"]);

/** Flags that have no place in a config file, with the reason. */
const NOT_IN_FILE: Readonly<Record<string, string>> = {
  help: "is a command-line flag only",
  version: "is a command-line flag only",
  config: "cannot be nested: a config file cannot name another one",
  repair: "belongs to usbd-tui check, which takes one store from flags",
};

/** Every key a file may use somewhere. */
const KNOWN_KEYS: readonly string[] = [...Object.keys(FLAGS).filter((k) => !(k in NOT_IN_FILE)), "name", "nbd-device"];

export type Place = "top" | "device";

/** Why `key` cannot stand at `place`, or undefined when it can. */
export function keyProblem(key: string, place: Place): string | undefined {
  if (Object.hasOwn(NOT_IN_FILE, key)) return `${key} ${NOT_IN_FILE[key]}`;
  if (!KNOWN_KEYS.includes(key)) return `unknown key "${key}"${suggestion(key)}`;
  if (place === "device" && GLOBAL_ONLY.has(key)) return `${key} applies to the whole process: set it at the top of the file (before the first [[device]]) or on the command line`;
  if (place === "top" && DEVICE_ONLY.has(key)) {
    return key === "name" || key === "export-name" || key === "store-name"
      ? `${key} names one device: set it inside each [[device]] table (store-name defaults to the device's name)`
      : `${key} names one kernel device: set it inside the [[device]] table it belongs to`;
  }
  return undefined;
}

/** " (did you mean store-size?)" for a key one or two edits (or a '_' for '-') away from a known one. */
function suggestion(key: string): string {
  const dashed = key.toLowerCase().replaceAll("_", "-");
  let best: { key: string; distance: number } | undefined;
  for (const known of KNOWN_KEYS) {
    const distance = dashed === known ? 0 : editDistance(dashed, known);
    if (distance <= 2 && (best === undefined || distance < best.distance)) best = { key: known, distance };
  }
  return best ? ` (did you mean ${best.key}?)` : "; see README \"Several devices: --config\" for the keys";
}

function editDistance(a: string, b: string): number {
  let row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const next = [i];
    for (let j = 1; j <= b.length; j++) next[j] = Math.min(row[j]! + 1, next[j - 1]! + 1, row[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    row = next;
  }
  return row[b.length]!;
}

function describeType(value: unknown): string {
  if (Array.isArray(value)) return "an array";
  if (value === null || value === undefined) return "nothing";
  if (typeof value === "object") return value.constructor === Object ? "a table" : "a date or time";
  if (typeof value === "number") return Number.isInteger(value) ? "an integer" : "a float";
  return `a ${typeof value}`;
}

/** The text a key's value stands for (`true`, `4096`, `1GiB`, inline JSON); throws a message naming the expected type. */
export function valueText(key: string, value: unknown): string {
  const spec: { readonly type: string; readonly value?: string } = Object.hasOwn(FLAGS, key) ? FLAGS[key as FlagName] : { type: "string" };
  const wrong = (expected: string) => new Error(`${key} takes ${expected}, not ${describeType(value)}`);
  if (spec.type === "boolean") {
    if (typeof value !== "boolean") throw wrong("true or false");
    return String(value);
  }
  if (key === "objstore-cfg" && describeType(value) === "a table") return JSON.stringify(value);
  if (typeof value === "string") return value;
  if (typeof value === "number" && Number.isFinite(value)) {
    if (spec.type === "size" || spec.type === "integer") {
      if (!Number.isSafeInteger(value)) throw wrong(spec.type === "size" ? 'a size: an integer number of bytes or a string like "1GiB"' : "an integer");
      return String(value);
    }
    if (spec.type === "seconds" || spec.value === "SECONDS" || spec.value === "DURATION") return String(value);
  }
  if (spec.type === "size") throw wrong('a size: an integer number of bytes or a string like "1GiB"');
  if (spec.type === "integer") throw wrong("an integer");
  if (spec.type === "seconds" || spec.value === "SECONDS") throw wrong("a number of seconds");
  if (spec.value === "DURATION") throw wrong('a number of seconds or a duration string like "1m"');
  throw wrong(key === "objstore-cfg" ? "a string (inline JSON or a file path) or a table" : "a string");
}
