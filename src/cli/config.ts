/**
 * `--config FILE`: several devices in one process, listed in a TOML file (read with Bun.TOML). Top-level keys apply
 * to every device; each `[[device]]` table describes one device; keys are the flags' names without the dashes.
 * Every device becomes the argv its keys stand for and goes through parseFlags, so each value is checked, defaulted
 * and reported exactly as the flag would be.
 *
 * Precedence, lowest first: built-in defaults, the file's top-level keys, the command line, the device's own table.
 * A flag on the command line that a [[device]] table also sets is an error rather than a silent winner.
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import { deviceKinds, isDeviceKind } from "../devices/index.ts";
import { type Place, keyProblem, valueText } from "./config-keys.ts";
import { type CliOptions, type FlagName, UsageError, givenFlags, parseFlags } from "./flags.ts";

export interface ConfigRun {
  /** Options for the whole process (listen, headless, json, ...): the file's top-level keys, the command line over them. */
  readonly global: CliOptions;
  /** One per [[device]] table, in the file's order; each exportName is unique. */
  readonly devices: readonly CliOptions[];
}

type Table = Record<string, unknown>;

const NAME = /^[A-Za-z0-9._-]+$/;
const NBD_DEVICE = /^\/dev\/nbd\d+$/;
const SEE_README = 'see README "Several devices: --config"';

/** Reads and parses the file `--config` names; `argv` is the whole command line. Throws UsageError naming the file. */
export function loadConfig(file: string, argv: readonly string[]): ConfigRun {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const why = code === "ENOENT" ? "no such file" : code === "EISDIR" ? "is a directory, not a TOML file" : code === "EACCES" ? "permission denied" : (error as Error).message;
    throw new UsageError(`--config ${file}: ${why}`);
  }
  return parseConfig(text, file, argv);
}

/** Parses a config file's text; `file` names it in messages, `argv` is the command line the file came with. */
export function parseConfig(text: string, file: string, argv: readonly string[]): ConfigRun {
  const fail = (where: string, message: string): never => {
    throw new UsageError(`${file}: ${where}${message}`);
  };
  const parse = (args: readonly string[], where: string): CliOptions => {
    try {
      return parseFlags(args);
    } catch (error) {
      throw error instanceof UsageError ? new UsageError(`${file}: ${where}${error.message}`) : error;
    }
  };
  const cli = givenFlags(argv);
  if (cli.positionals.length > 0) {
    fail("", `a device path on the command line (${cli.positionals[0]}) does not go with --config; set nbd-device = "${cli.positionals[0]}" in its [[device]] table`);
  }
  for (const flag of ["export-name", "store-name", "reattach"] as const) {
    if (cli.names.has(flag)) fail("", `--${flag} on the command line does not go with --config; set ${flag === "export-name" ? "name" : flag} in each [[device]] table`);
  }

  const { device: tables, ...topTable } = parseToml(text, file);
  const top = keyValues(topTable, "top", (message) => fail("", message));
  // The command line overrides the file's top-level keys.
  const topArgs = (except: ReadonlySet<string>) =>
    [...top].filter(([key]) => !cli.names.has(key as FlagName) && !except.has(key)).map(([key, value]) => `--${key}=${value}`);
  const global = parse([...topArgs(new Set()), ...argv], "");

  if (tables === undefined || (Array.isArray(tables) && tables.length === 0)) fail("", `no devices: add a [[device]] table for each device (${SEE_README})`);
  if (!Array.isArray(tables) || !tables.every(isTable)) fail("", "device must be a list of tables: write [[device]] (two brackets) above each device's keys");

  const devices = (tables as Table[]).map((table, index) => {
    const name = deviceName(table, `device #${index + 1}: `, fail);
    const where = `device "${name}": `;
    const own = keyValues(table, "device", (message) => fail(where, message));
    const args: string[] = [`--export-name=${name}`];
    if (!own.has("store-name")) args.push(`--store-name=${name}`);
    for (const [key, value] of own) {
      if (key === "name" || key === "export-name") continue;
      if (cli.names.has(key as FlagName)) fail(where, `${key} is set both here and on the command line (--${key}); keep one`);
      if (key !== "nbd-device") args.push(`--${key}=${value}`);
      else if (!NBD_DEVICE.test(value)) fail(where, `nbd-device takes an NBD device path like /dev/nbd0, not "${value}"`);
      else args.push(value);
    }
    return parse([...topArgs(new Set(own.keys())), ...args, ...argv], where);
  });
  checkDistinct(devices, (message) => fail("", message));
  return { global, devices };
}

/** Bun.TOML.parse, with a syntax error's line found (Bun's error does not carry it). */
function parseToml(text: string, file: string): Table {
  try {
    return Bun.TOML.parse(text) as Table;
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    const lines = text.split("\n");
    let line: number | undefined;
    // The first prefix of the file that fails the same way ends on the offending line.
    const failsAlike = (prefix: string) => {
      try {
        Bun.TOML.parse(prefix);
        return false;
      } catch (prefixError) {
        return prefixError instanceof Error && prefixError.message === message;
      }
    };
    for (let n = 1; n <= Math.min(lines.length, 5000) && line === undefined; n++) {
      const prefix = lines.slice(0, n).join("\n");
      if (failsAlike(prefix) || failsAlike(`${prefix}\n`)) line = n;
    }
    throw new UsageError(`${file}${line === undefined ? "" : `:${line}`}: TOML syntax error: ${message.replace(/^TOML Parse error: /, "")}`);
  }
}

function isTable(value: unknown): value is Table {
  return typeof value === "object" && value !== null && value.constructor === Object;
}

/** Checks every key of a table for its place and turns each value into the text its flag takes. */
function keyValues(table: Table, place: Place, fail: (message: string) => never): Map<string, string> {
  const values = new Map<string, string>();
  for (const [key, value] of Object.entries(table)) {
    const problem = keyProblem(key, place);
    if (problem !== undefined) fail(problem);
    try {
      values.set(key, valueText(key, value));
    } catch (error) {
      fail((error as Error).message);
    }
  }
  return values;
}

/** A device's name: `name`, or `export-name` as the flags spell it; it is the export name and the default store name. */
function deviceName(table: Table, where: string, fail: (where: string, message: string) => never): string {
  if (table.name !== undefined && table["export-name"] !== undefined) fail(where, "give name or export-name, not both (they are the same thing)");
  const name = table.name ?? table["export-name"];
  if (name === undefined) fail(where, 'needs a name: add name = "..." (the export name, and the store name unless store-name says otherwise)');
  if (typeof name !== "string" || !NAME.test(name)) {
    fail(where, `name must be a string of letters, digits, '.', '_' and '-', not ${typeof name === "string" ? `"${name}"` : String(name)}`);
  }
  return name as string;
}

/** Devices must not share a name, a store, an objstore volume or a kernel device. */
function checkDistinct(devices: readonly CliOptions[], fail: (message: string) => never): void {
  const seen = new Map<string, string>();
  const claim = (key: string, device: string, what: string, fix: string) => {
    const other = seen.get(key);
    if (other === undefined) return void seen.set(key, device);
    fail(other === device ? `two devices are named "${device}"; ${fix}` : `devices "${other}" and "${device}" both use ${what}; ${fix}`);
  };
  for (const d of devices) {
    claim(`name ${d.exportName}`, d.exportName, "", "each [[device]] needs its own name (it is the export name)");
    const store = path.join(path.resolve(d.storeDir), d.storeName);
    if (isDeviceKind(d.devType) && deviceKinds[d.devType].persistent) {
      claim(`store ${store}`, d.exportName, `the store ${store}`, "give one its own store-name or store-dir");
    }
    if (d.devType === "objstore") {
      claim(`volume ${d.objstore.kind} ${d.objstore.config} ${d.storeName}`, d.exportName, `the objstore volume "${d.storeName}" in the same store`, "give one its own store-name");
    }
    for (const nbd of new Set([d.nbdDevice, d.reattach])) {
      if (nbd !== undefined) claim(`nbd ${nbd}`, d.exportName, nbd, "each kernel device serves one device");
    }
  }
}
