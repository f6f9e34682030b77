// --config FILE: the TOML file's devices, parsed through the same flag parser, and every mistake a usage error that
// names the file and the key or device. Also: a failure opening the second device closes the first.
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { type ConfigRun, loadConfig, parseConfig } from "../../src/cli/config.ts";
import { OpenDeviceError, openDevices } from "../../src/app/open-devices.ts";
import { UsageError, parseFlags } from "../../src/cli/flags.ts";
import { daemonPlan } from "../../src/cli/plan.ts";
import { createDevice } from "../../src/devices/index.ts";
import { Host } from "../../src/engine/host.ts";
import { textLogger } from "../../src/shared/log.ts";

const FILE = "usbd.toml";
const parse = (text: string, argv: readonly string[] = []): ConfigRun => parseConfig(text, FILE, ["--config", FILE, ...argv]);

/** The UsageError message parsing `text` gives (fails the test when it parses). */
function problem(text: string, argv: readonly string[] = []): string {
  try {
    parse(text, argv);
  } catch (error) {
    expect(error).toBeInstanceOf(UsageError);
    return (error as Error).message;
  }
  throw new Error(`expected a usage error for:\n${text}`);
}

const dirs: string[] = [];
function tempDir(): string {
  const dir = mkdtempSync(path.join(tmpdir(), "usbd-config-"));
  dirs.push(dir);
  return dir;
}
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

describe("a config file's devices", () => {
  test("examples/usbd.toml parses into its four devices (so the example cannot rot)", async () => {
    const file = path.join(import.meta.dir, "../../examples/usbd.toml");
    const run = loadConfig(file, ["--config", file]);
    expect(run.global).toMatchObject({ listen: "unix:/tmp/usbd.sock", statsInterval: 10, config: file });
    expect(run.devices.map((d) => [d.exportName, d.storeName, d.devType, d.storeSize])).toEqual([
      ["scratch", "scratch", "mem", 256 * 1024 ** 2],
      ["vm1", "vm1", "file", 20 * 1024 ** 3],
      ["backups", "backups", "dedup", 100 * 1024 ** 3],
      ["archive", "archive-2025", "objstore", 10 * 1024 ** 3],
    ]);
    for (const d of run.devices) expect(d).toMatchObject({ listen: "unix:/tmp/usbd.sock", storeDir: "/tmp/usbd-example", statsInterval: 10 });
    expect(run.devices[2]!.dedupMemcache).toBe(64 * 1024 ** 2);
    expect(run.devices[3]!.objstore).toMatchObject({ kind: "local", config: '{"path":"/tmp/usbd-example/objects"}', flushEvery: 5 });
  });

  test("the README's example is the same file, and parses to the same devices", async () => {
    const readme = await Bun.file(path.join(import.meta.dir, "../../README.md")).text();
    const block = /### Several devices: --config[\s\S]*?```toml\n([\s\S]*?)```/.exec(readme)?.[1];
    expect(block).toBeDefined();
    const file = path.join(import.meta.dir, "../../examples/usbd.toml");
    const fromExample = loadConfig(file, ["--config", file]);
    expect(parseConfig(block!, "README.md", ["--config", file])).toEqual(fromExample);
  });

  test("each device is exactly what the same flags give: defaults, top-level keys, its own keys", () => {
    const run = parse(`
      listen = "unix:/tmp/u.sock"
      block-size = "8KiB"
      dedup-compress = "none"
      [[device]]
      name = "a"
      [[device]]
      export-name = "b"
      dev-type = "dedup"
      store-size = 1048576
      block-size = 4096
      objstore-persistcache = true
    `);
    const a = parseFlags(["--listen=unix:/tmp/u.sock", "--block-size=8KiB", "--dedup-compress=none", "--store-name=a", "--config", FILE]);
    expect(run.devices[0]).toEqual(a);
    const b = parseFlags(["--listen=unix:/tmp/u.sock", "--dedup-compress=none", "--store-name=b", "--dev-type=dedup", "--store-size=1MiB", "--block-size=4KiB", "--objstore-persistcache", "--config", FILE]);
    expect(run.devices[1]).toEqual(b);
    expect(run.global).toEqual(parseFlags(["--listen=unix:/tmp/u.sock", "--block-size=8KiB", "--dedup-compress=none", "--config", FILE]));
  });

  test("command-line flags override the top-level keys; numbers for seconds, a table for objstore-cfg, nbd-device for the kernel", () => {
    const run = parse(
      `
      store-dir = "/srv/a"
      stats-interval = 10
      json = false
      [[device]]
      name = "k1"
      dev-type = "objstore"
      objstore-cfg = { endpoint = "http://127.0.0.1:9000", bucket = "b" }
      objstore-flushevery = 2.5
      connections = 4
      nbd-timeout = 30
      nbd-device = "/dev/nbd5"
      [[device]]
      name = "k2"
      reattach = "/dev/nbd6"
    `,
      ["--store-dir", "/srv/b", "--json", "--stats-interval=2"],
    );
    expect(run.global).toMatchObject({ storeDir: "/srv/b", json: true, statsInterval: 2 });
    const [k1, k2] = run.devices;
    expect(k1).toMatchObject({ storeDir: "/srv/b", json: true, connections: 4, nbdTimeout: 30, nbdDevice: "/dev/nbd5", listen: undefined });
    expect(JSON.parse(k1!.objstore.config!)).toEqual({ endpoint: "http://127.0.0.1:9000", bucket: "b" });
    expect(k1!.objstore.flushEvery).toBe(2.5);
    expect(k2).toMatchObject({ reattach: "/dev/nbd6", nbdDevice: undefined, connections: 1 });
  });

  test("two mem devices may share the store settings (nothing is stored); file devices in different directories may share a name", () => {
    expect(parse('[[device]]\nname = "a"\nstore-name = "x"\n[[device]]\nname = "b"\nstore-name = "x"').devices).toHaveLength(2);
    expect(parse('dev-type = "file"\n[[device]]\nname = "a"\nstore-dir = "/d1"\n[[device]]\nname = "a2"\nstore-name = "a"\nstore-dir = "/d2"').devices).toHaveLength(2);
  });
});

describe("mistakes are usage errors that name the file and the key or device", () => {
  test("a missing file, and a directory", () => {
    expect(() => loadConfig("/nonexistent/usbd.toml", [])).toThrow("--config /nonexistent/usbd.toml: no such file");
    expect(() => loadConfig(tempDir(), [])).toThrow(/is a directory/);
  });

  test("a TOML syntax error gives its line", () => {
    expect(problem('listen = "unix:/tmp/s"\n\n[[device]]\nname = "a"\nstore-size 1\n')).toBe("usbd.toml:5: TOML syntax error: Expected '=' after a key but found '1'");
    expect(problem('[[device]]\nname = "a\nstore-size = 1')).toMatch(/^usbd\.toml:2: TOML syntax error: Unterminated string/);
    expect(problem('a = 1\nb = [\n  1,\n  2 3\n]')).toMatch(/^usbd\.toml:4: TOML syntax error: .*array/);
    expect(problem('[[device]]\nname = "a"\nname = "b"')).toMatch(/^usbd\.toml:3: TOML syntax error: Cannot redefine key 'name'/);
  });

  test("an unknown key, with the key it was probably meant to be", () => {
    expect(problem('[[device]]\nname = "a"\nstore_size = "1GiB"')).toBe('usbd.toml: device "a": unknown key "store_size" (did you mean store-size?)');
    expect(problem('lisen = "unix:/tmp/s"\n[[device]]\nname = "a"')).toBe('usbd.toml: unknown key "lisen" (did you mean listen?)');
    expect(problem('[[device]]\nname = "a"\nflavour = "vanilla"')).toMatch(/^usbd\.toml: device "a": unknown key "flavour"; see README/);
    expect(problem('[defaults]\nstore-size = 1\n[[device]]\nname = "a"')).toMatch(/unknown key "defaults"/);
  });

  test("a value of the wrong type names the key and the type it takes", () => {
    const cases: [string, string][] = [
      ["headless = 1", 'usbd.toml: headless takes true or false, not an integer'],
      ['json = "yes"', "usbd.toml: json takes true or false, not a string"],
      ["store-size = true", 'usbd.toml: store-size takes a size: an integer number of bytes or a string like "1GiB", not a boolean'],
      ["store-size = 1.5", "usbd.toml: store-size takes a size: an integer number of bytes or a string like \"1GiB\", not a float"],
      ["nbd-max-devs = 2.5", "usbd.toml: nbd-max-devs takes an integer, not a float"],
      ["stats-interval = [1]", "usbd.toml: stats-interval takes a number of seconds, not an array"],
      ["store-dir = 5", "usbd.toml: store-dir takes a string, not an integer"],
      ["dev-type = { kind = \"mem\" }", "usbd.toml: dev-type takes a string, not a table"],
      ["store-dir = 1979-05-27", "usbd.toml: store-dir takes a string, not a date or time"],
      ["objstore-cfg = 1", "usbd.toml: objstore-cfg takes a string (inline JSON or a file path) or a table, not an integer"],
    ];
    for (const [line, message] of cases) expect(problem(`${line}\n[[device]]\nname = "a"`), line).toBe(message);
    expect(problem('[[device]]\nname = "a"\nforce = "yes"')).toMatch(/force applies to the whole process/);
    expect(problem('[[device]]\nname = "a"\nobjstore-persistcache = "yes"')).toBe('usbd.toml: device "a": objstore-persistcache takes true or false, not a string');
  });

  test("a value the flag refuses gets the flag's own message, under the device's name", () => {
    expect(problem('[[device]]\nname = "a"\nstore-size = "lots"')).toMatch(/^usbd\.toml: device "a": --store-size: cannot read "lots" as a size/);
    expect(problem('[[device]]\nname = "a"\nstore-size = 1000')).toBe('usbd.toml: device "a": --store-size 1000 is 1,000 bytes, not a multiple of the block size (4 KiB); the nearest valid size is 4,096 bytes (4 KiB)');
    expect(problem('listen = "unix:/tmp/s"\n[[device]]\nname = "a"\nconnections = 2')).toBe('usbd.toml: device "a": --connections only applies when attaching to the kernel, not with --listen');
    expect(problem('log-level = "loud"\n[[device]]\nname = "a"')).toBe('usbd.toml: --log-level takes debug, info, warn or error, not "loud"');
    expect(problem('[[device]]\nname = "a"\nnbd-device = "/dev/sda"')).toBe('usbd.toml: device "a": nbd-device takes an NBD device path like /dev/nbd0, not "/dev/sda"');
  });

  test("devices that share a name, a store, an objstore volume or a kernel device", () => {
    expect(problem('[[device]]\nname = "a"\n[[device]]\nname = "a"')).toBe('usbd.toml: two devices are named "a"; each [[device]] needs its own name (it is the export name)');
    expect(problem('[[device]]\nname = "a"\n[[device]]\nexport-name = "a"')).toMatch(/two devices are named "a"/);
    expect(problem('store-dir = "/srv/u"\n[[device]]\nname = "a"\ndev-type = "file"\n[[device]]\nname = "b"\ndev-type = "dedup"\nstore-name = "a"')).toBe(
      'usbd.toml: devices "a" and "b" both use the store /srv/u/a; give one its own store-name or store-dir',
    );
    expect(problem('[[device]]\nname = "a"\ndev-type = "file"\nstore-dir = "/srv/u/"\n[[device]]\nname = "b"\ndev-type = "file"\nstore-dir = "/srv/x/../u"\nstore-name = "a"')).toMatch(
      /devices "a" and "b" both use the store \/srv\/u\/a/,
    );
    const objstore = 'dev-type = "objstore"\nobjstore-cfg = "/etc/s3.json"\n';
    expect(problem(`${objstore}[[device]]\nname = "v"\nstore-dir = "/a"\n[[device]]\nname = "w"\nstore-dir = "/b"\nstore-name = "v"`)).toMatch(
      /devices "v" and "w" both use the objstore volume "v" in the same store; give one its own store-name/,
    );
    expect(problem('[[device]]\nname = "a"\nnbd-device = "/dev/nbd1"\n[[device]]\nname = "b"\nreattach = "/dev/nbd1"')).toMatch(/devices "a" and "b" both use \/dev\/nbd1/);
  });

  test("no devices, or a [device] table instead of [[device]]", () => {
    expect(problem('listen = "unix:/tmp/s"')).toMatch(/^usbd\.toml: no devices: add a \[\[device\]\] table for each device/);
    expect(problem("")).toMatch(/no devices/);
    expect(problem("device = []")).toMatch(/no devices/);
    expect(problem('[device]\nname = "a"')).toBe("usbd.toml: device must be a list of tables: write [[device]] (two brackets) above each device's keys");
  });

  test("a device without a name, with two names, or with a name that cannot be a store name", () => {
    expect(problem('[[device]]\nname = "a"\n[[device]]\ndev-type = "mem"')).toMatch(/^usbd\.toml: device #2: needs a name: add name = "\.\.\."/);
    expect(problem('[[device]]\nname = "a"\nexport-name = "b"')).toMatch(/device #1: give name or export-name, not both/);
    expect(problem('[[device]]\nname = "my disk"')).toMatch(/device #1: name must be a string of letters, digits, '.', '_' and '-', not "my disk"/);
    expect(problem("[[device]]\nname = 7")).toMatch(/name must be a string .*, not 7/);
  });

  test("process-wide keys inside a [[device]] table", () => {
    for (const [key, value] of [["listen", '"unix:/tmp/s"'], ["headless", "true"], ["json", "true"], ["log-level", '"debug"'], ["stats-interval", "5"], ["nbd-max-devs", "4"], ["force", "true"]]) {
      expect(problem(`[[device]]\nname = "a"\n${key} = ${value}`), key).toBe(
        `usbd.toml: device "a": ${key} applies to the whole process: set it at the top of the file (before the first [[device]]) or on the command line`,
      );
    }
  });

  test("per-device keys at the top level, and keys that have no place in a file", () => {
    expect(problem('name = "a"\n[[device]]\nname = "b"')).toMatch(/^usbd\.toml: name names one device: set it inside each \[\[device\]\] table/);
    expect(problem('store-name = "a"\n[[device]]\nname = "b"')).toMatch(/store-name names one device/);
    expect(problem('nbd-device = "/dev/nbd1"\n[[device]]\nname = "b"')).toMatch(/nbd-device names one kernel device: set it inside the \[\[device\]\] table/);
    expect(problem('reattach = "/dev/nbd1"\n[[device]]\nname = "b"')).toMatch(/reattach names one kernel device/);
    expect(problem('help = true\n[[device]]\nname = "b"')).toBe("usbd.toml: help is a command-line flag only");
    expect(problem('[[device]]\nname = "b"\nversion = true')).toBe('usbd.toml: device "b": version is a command-line flag only');
    expect(problem('config = "other.toml"\n[[device]]\nname = "b"')).toMatch(/config cannot be nested/);
    expect(problem('[[device]]\nname = "b"\nrepair = true')).toMatch(/repair belongs to usbd-tui check/);
  });

  test("command-line flags that name one device, and a flag a device also sets", () => {
    const file = '[[device]]\nname = "a"\nstore-size = "1GiB"';
    expect(problem(file, ["--export-name", "x"])).toBe("usbd.toml: --export-name on the command line does not go with --config; set name in each [[device]] table");
    expect(problem(file, ["--store-name=x"])).toMatch(/--store-name on the command line does not go with --config; set store-name/);
    expect(problem(file, ["/dev/nbd0"])).toMatch(/a device path on the command line \(\/dev\/nbd0\) does not go with --config; set nbd-device = "\/dev\/nbd0"/);
    expect(problem(file, ["--store-size=2GiB"])).toBe('usbd.toml: device "a": store-size is set both here and on the command line (--store-size); keep one');
  });
});

describe("opening a config's devices", () => {
  test("each device is opened in order from its own options, which stay with it for the kernel attach", async () => {
    const { global, devices } = parse('[[device]]\nname = "a"\nstore-size = "4MiB"\nconnections = 2\n[[device]]\nname = "b"\nstore-size = 8192\nnbd-device = "/dev/nbd7"');
    const plan = daemonPlan(global, devices, "0");
    const host = new Host(textLogger("error"));
    await openDevices(plan.devices, host);
    expect(host.list().map((d) => [d.name, d.device.kind, d.device.size])).toEqual([
      ["a", "mem", 4 * 1024 ** 2],
      ["b", "mem", 8192],
    ]);
    expect(plan.devices.map((d) => [d.name, d.kernel?.connections, d.kernel?.devicePath])).toEqual([
      ["a", 2, undefined],
      ["b", 1, "/dev/nbd7"],
    ]);
    await host.stop({ force: true });
  });

  test("when the second device fails, the error names it and host.stop closes the first (its store can be reopened)", async () => {
    const dir = tempDir();
    writeFileSync(path.join(dir, "b.img"), new Uint8Array(1024 * 1024));
    const { global, devices } = parse(`store-dir = "${dir}"\n[[device]]\nname = "a"\ndev-type = "dedup"\nstore-size = "8MiB"\n[[device]]\nname = "b"\ndev-type = "file"\nstore-size = "2MiB"`);
    const host = new Host(textLogger("error"));
    let error: unknown;
    try {
      await openDevices(daemonPlan(global, devices, "0").devices, host);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(OpenDeviceError);
    expect((error as OpenDeviceError).device).toBe("b");
    expect((error as Error).message).toMatch(/^device "b": .*refusing to resize/);
    expect(host.list().map((d) => d.name)).toEqual(["a"]);
    // The dedup store is locked while open: a second open in this process fails until the first is closed.
    await expect(Promise.resolve().then(() => createDevice("dedup", { storeDir: dir, storeName: "a" }))).rejects.toThrow(/locked/);
    await host.stop({ force: true });
    expect(host.list()[0]!.state).toBe("detached");
    const reopened = await createDevice("dedup", { storeDir: dir, storeName: "a" });
    expect(reopened.size).toBe(8 * 1024 ** 2);
    await reopened.close();
  });
});
