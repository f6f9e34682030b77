/**
 * azurite's Blob service for the suites: on 127.0.0.1, a free port, data in a directory that outlives a stop, so
 * that `restart()` brings the same containers back on the same port. Always `--disableTelemetry`: without it azurite
 * tries to send telemetry off the machine, which no test here may do.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { ObjectStoreConfig } from "../../src/devices/objstore/store/config.ts";
import { waitFor, watch, type Watched } from "./process.ts";

/** azurite's well-known development account and key (public, in Microsoft's documentation). */
export const AZURITE_ACCOUNT = "devstoreaccount1";
export const AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

export interface AzuriteServer {
  /** The blob service URL: `http://127.0.0.1:<port>/devstoreaccount1`. */
  readonly endpoint: string;
  readonly port: number;
  readonly directory: string;
  stop(): Promise<void>;
  restart(): Promise<void>;
  cleanup(): Promise<void>;
}

const BIN = path.join(import.meta.dir, "..", "..", "node_modules", "azurite", "dist", "src", "blob", "main.js");

function launch(directory: string, port: number): Watched {
  // prettier-ignore
  return watch(["node", BIN, "--location", directory, "--blobHost", "127.0.0.1", "--blobPort", String(port),
    "--loose", "--skipApiVersionCheck", "--disableTelemetry", "--silent"]);
}

async function started(w: Watched): Promise<number> {
  const listening = /listens on http:\/\/127\.0\.0\.1:(\d+)/;
  return Number(await waitFor("azurite listening", w, () => listening.exec(w.stdout())?.[1], 30_000));
}

export async function startAzurite(options: { directory?: string } = {}): Promise<AzuriteServer> {
  const owned = options.directory === undefined;
  const directory = options.directory ?? fs.mkdtempSync(path.join(os.tmpdir(), "usbd-azurite-"));
  fs.mkdirSync(directory, { recursive: true });
  let running: Watched | undefined = launch(directory, 0);
  const port = await started(running);
  const stop = async (): Promise<void> => {
    const w = running;
    running = undefined;
    await w?.stop("SIGTERM", 5_000);
  };
  return {
    endpoint: `http://127.0.0.1:${port}/${AZURITE_ACCOUNT}`,
    port,
    directory,
    stop,
    async restart() {
      await stop();
      running = launch(directory, port);
      await started(running);
    },
    async cleanup() {
      await stop();
      if (owned) fs.rmSync(directory, { recursive: true, force: true });
    },
  };
}

/** The store configuration for `server` (what `--objstore-cfg` parses to). */
export function azuriteConfig(server: Pick<AzuriteServer, "endpoint">, container = "usbd"): ObjectStoreConfig {
  return { account: AZURITE_ACCOUNT, key: AZURITE_KEY, endpoint: server.endpoint, container };
}

/** The same as an inline `--objstore-cfg` value. */
export function azuriteConfigJson(server: Pick<AzuriteServer, "endpoint">, container = "usbd"): string {
  return JSON.stringify({ account: AZURITE_ACCOUNT, key: AZURITE_KEY, endpoint: server.endpoint, container });
}
