/**
 * The backends an objstore bench run (bench/objstore.ts) measures, and where each volume lives on them: a bucket of
 * an s3rver child, a directory of the local backend, or a place on one of the remote stores (remote-stores.ts).
 * Starts the servers they need and stops them again.
 */
import { rmSync } from "node:fs";
import { join } from "node:path";
import { log } from "./objstore-format.ts";
import type { Harness } from "./objstore-harness.ts";
import type { BackendName, Options } from "./objstore-options.ts";
import { REMOTE_BACKENDS, RemoteStores, type Place, type RemoteBackend } from "./remote-stores.ts";
import { type S3Child, startS3Child } from "./s3rver-child.ts";

export interface Backend {
  readonly name: BackendName;
  /** A fresh place for one volume (its own bucket or directory), and how to drop it afterwards. */
  place(tag: string): Place;
}

export class BackendServers {
  private s3: S3Child | undefined;
  private readonly remote: RemoteStores;

  constructor(private readonly o: Options, private readonly repo: string) {
    this.remote = new RemoteStores(o.scratch);
  }

  /** Starts the servers of `--backends`, in its order; the s3rver's pid goes to `harness` (its CPU is ours). */
  async start(harness: Harness): Promise<Backend[]> {
    const o = this.o;
    const backends: Backend[] = [];
    await this.remote.start(o.backends);
    for (const name of o.backends) {
      if ((REMOTE_BACKENDS as readonly string[]).includes(name)) {
        const which = name as RemoteBackend;
        backends.push({ name, place: (tag) => this.remote.place(which, tag) });
      } else if (name === "s3") {
        const dir = join(o.scratch, "s3rver");
        this.s3 = await startS3Child({ repo: this.repo, bun: process.execPath, dir });
        const server = this.s3;
        harness.s3Pid = server.pid;
        log(`s3rver at ${server.endpoint} (pid ${server.pid}), data in ${dir}`);
        backends.push({
          name,
          place: (tag) => {
            // One bucket per volume; dropping it removes s3rver's directory for it (quicker than a DELETE per object).
            const bucket = `b-${tag}`.toLowerCase().replace(/[^a-z0-9-]/g, "-");
            return { kind: "s3", config: server.cfgJson(bucket), drop: () => rmSync(join(dir, bucket), { recursive: true, force: true }) };
          },
        });
      } else {
        backends.push({
          name,
          place: (tag) => {
            const path = join(o.scratch, "local", tag);
            return { kind: "local", config: JSON.stringify({ path }), drop: () => rmSync(path, { recursive: true, force: true }) };
          },
        });
      }
    }
    return backends;
  }

  /** Stops whatever `start` got running, also after it failed halfway. */
  async stop(): Promise<void> {
    await this.s3?.stop();
    await this.remote.stop();
  }
}
