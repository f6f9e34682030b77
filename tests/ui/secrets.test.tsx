/**
 * Secrets never reach the dashboard: an objstore device opened from the CLI's own flags (an --objstore-cfg with a
 * secret_key for an s3rver store, and an --objstore-aeskey key:<hex>) goes through its life on screen (created,
 * written by qemu-io, uploads, the store going down and the upload errors that quote it, the full log view), and
 * neither secret, in any form, is in any frame ink drew, in the events a viewer would get, or in the log.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { render } from "ink-testing-library";
import { Daemon } from "../../src/app/daemon.ts";
import { parseFlags } from "../../src/cli/flags.ts";
import { daemonPlan } from "../../src/cli/plan.ts";
import type { Logger } from "../../src/shared/log.ts";
import { App } from "../../src/ui/App.tsx";
import { removeDir, run, skipReason, tempDir } from "../clients/helpers.ts";
import { type S3Server, S3RVER_KEY, startS3Server } from "../helpers/s3-server.ts";
import { frameWhere } from "./frames.ts";

const skip = skipReason("secrets in the dashboard", ["qemu-io"]);
/** s3rver checks the access key id, not the signature: any secret works, so it can be one no other text contains. */
const SECRET_KEY = "sEcReT-s3-key-4f1d9c2b7a";
const AES_KEY = Buffer.from("a3f09c51e27d48b6904c1fe8d25b7a3c6e19d40f8b52c7a1e6093d4fb28c5e71", "hex");

/** Every way a secret could be shown: whole, or cut short as a UI would cut a long value; hex in either case, base64. */
function needles(): string[] {
  const hex = AES_KEY.toString("hex");
  const base64 = AES_KEY.toString("base64");
  return [SECRET_KEY, SECRET_KEY.slice(0, 12), hex, hex.slice(0, 16), hex.toUpperCase().slice(0, 16), base64.slice(0, 16)];
}

function leaks(text: string): string[] {
  return needles().filter((n) => text.includes(n));
}

describe.skipIf(skip !== undefined)("secrets never in the dashboard", () => {
  let dir: string;
  let s3: S3Server;
  let daemon: Daemon;
  let ui: ReturnType<typeof render>;
  const logged: string[] = [];
  const log: Logger = { log: (level, message, fields) => logged.push(`${level} ${message} ${JSON.stringify(fields ?? {})}`) };

  beforeAll(async () => {
    dir = tempDir("ui-secrets");
    s3 = await startS3Server();
    const config = JSON.stringify({ access_key_id: S3RVER_KEY, secret_key: SECRET_KEY, endpoint: s3.endpoint, region: "us-east-1", bucket: "usbd" });
    const options = parseFlags([
      "--dev-type=objstore",
      `--store-dir=${join(dir, "cache")}`,
      "--store-name=vol",
      "--store-size=16MiB",
      "--objstore-objsize=1MiB",
      `--objstore-cfg=${config}`,
      `--objstore-aeskey=key:${AES_KEY.toString("hex")}`,
      "--objstore-flushevery=200ms",
      "--listen",
      `unix:${join(dir, "nbd.sock")}`,
      "--control",
      "none",
    ]);
    // As the CLI runs the dashboard: the devices opened, the dashboard drawn, then served.
    daemon = new Daemon(daemonPlan(options, [options], "0"), log);
    await daemon.open();
    ui = render(<App host={daemon.host} version="0" listen={options.listen} startedAt={Date.now()} size={{ columns: 120, rows: 40 }} refreshMs={50} onExit={() => undefined} />);
    await daemon.serve();
  }, 20_000);

  afterAll(async () => {
    ui?.unmount();
    await daemon?.stop("quit", { force: true }).catch(() => undefined);
    await s3?.cleanup();
    removeDir(dir);
  });

  test("no frame, event or log line holds the store's secret_key or the AES key, through uploads, a store outage and the full log", async () => {
    const uri = `nbd+unix:///vol?socket=${join(dir, "nbd.sock")}`;
    await frameWhere(ui.lastFrame, (f) => /vol\s+created new volume/.test(f), "the volume's creation");
    await run(["qemu-io", "-f", "raw", "-c", "write -P 0x11 0 2M", uri]);
    await frameWhere(ui.lastFrame, (f) => /vol\s+uploaded \d+ log objects?/.test(f), "an upload");
    // Errors quote the store they failed on: the place a secret would slip in.
    await s3.stop();
    await run(["qemu-io", "-f", "raw", "-c", "write -P 0x22 4M 1M", uri]);
    await frameWhere(ui.lastFrame, (f) => /vol\s+uploads failing/.test(f) && f.includes("error: upload of"), "the store error in the pane and the panel", 20_000);
    // The full log view: every event kept, not only the pane's last few.
    await Bun.sleep(150);
    ui.stdin.write("l");
    await frameWhere(ui.lastFrame, (f) => f.includes("log view: esc, l or q to go back") && f.includes("uploads failing"), "the full log view");
    await Bun.sleep(150);
    ui.stdin.write("\u001B[H"); // Home: the oldest events
    await frameWhere(ui.lastFrame, (f) => f.includes("log view: esc, l or q to go back") && f.includes("created new volume"), "the log's first events");

    const frames = ui.frames;
    expect(frames.length).toBeGreaterThan(10);
    expect(frames.filter((f) => leaks(f).length > 0).map((f) => leaks(f))).toEqual([]);
    const events = daemon.host.recentEvents().map((e) => e.message);
    expect(events.some((m) => m.includes("uploads failing"))).toBe(true);
    expect(events.filter((m) => leaks(m).length > 0)).toEqual([]);
    expect(logged.length).toBeGreaterThan(0);
    expect(logged.filter((l) => leaks(l).length > 0)).toEqual([]);
  }, 40_000);
});
