/**
 * An s3rver (tests/helpers/s3-server.ts: S3 on loopback, data in a directory) as a process of its own, so that in a
 * benchmark its CPU is not the measured process's: `bun bench/lib/s3rver-child.ts DIR` prints `S3 http://127.0.0.1:PORT`
 * on stdout once it listens, and stops (removing nothing: DIR is the caller's) on SIGTERM, SIGINT or when its stdin
 * closes. startS3Child() runs it from the harness.
 */
import { existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";

const LINE = /^S3 (http:\/\/\S+)$/m;

export interface S3Child {
  readonly endpoint: string;
  readonly pid: number;
  /** The inline `--objstore-cfg` for this server (s3rver's one key, region us-east-1). */
  cfgJson(bucket?: string): string;
  stop(): Promise<void>;
}

/**
 * Starts the child with its data in `dir`, pinned by `pin` (a taskset prefix, or []); resolves once it listens.
 * Its output goes to `dir`.log: a pipe left unread could stall it.
 */
export async function startS3Child(o: { repo: string; bun: string; dir: string; pin?: readonly string[] }): Promise<S3Child> {
  mkdirSync(o.dir, { recursive: true });
  const log = `${o.dir}.log`;
  // Bun does not truncate a file it is given as stdout: an old log would hold an old port.
  rmSync(log, { force: true });
  rmSync(`${log}.err`, { force: true });
  const proc = Bun.spawn([...(o.pin ?? []), o.bun, join(o.repo, "bench/lib/s3rver-child.ts"), o.dir], {
    cwd: o.repo,
    stdin: "pipe",
    stdout: Bun.file(log),
    stderr: Bun.file(`${log}.err`),
  });
  let exited = false;
  void proc.exited.then(() => {
    exited = true;
  });
  const deadline = performance.now() + 30_000;
  for (;;) {
    const m = existsSync(log) ? LINE.exec(readFileSync(log, "utf8")) : null;
    if (m) {
      const endpoint = m[1]!;
      return {
        endpoint,
        pid: proc.pid,
        cfgJson: (bucket = "usbd") =>
          JSON.stringify({ access_key_id: "S3RVER", secret_key: "S3RVER", endpoint, region: "us-east-1", bucket }),
        async stop() {
          if (!exited) proc.kill("SIGTERM");
          const timer = setTimeout(() => proc.kill("SIGKILL"), 5000);
          await proc.exited;
          clearTimeout(timer);
        },
      };
    }
    const err = existsSync(`${log}.err`) ? readFileSync(`${log}.err`, "utf8").trim().slice(-500) : "";
    if (exited) throw new Error(`s3rver child exited before listening: ${err}`);
    if (performance.now() > deadline) {
      proc.kill("SIGKILL");
      throw new Error(`s3rver child did not listen within 30 s: ${err}`);
    }
    await Bun.sleep(50);
  }
}

if (import.meta.main) {
  const dir = process.argv[2];
  if (!dir) {
    process.stderr.write("usage: bun bench/lib/s3rver-child.ts DIR\n");
    process.exit(2);
  }
  const { startS3Server } = await import("../../tests/helpers/s3-server.ts");
  const server = await startS3Server({ directory: resolve(dir) });
  process.stdout.write(`S3 ${server.endpoint}\n`);
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    await server.stop();
    process.exit(0);
  };
  process.on("SIGTERM", () => void stop());
  process.on("SIGINT", () => void stop());
  // The parent went away without a signal: its end of our stdin closes.
  void (async () => {
    for await (const _ of Bun.stdin.stream()) {
      // nothing is sent; the loop ends at EOF
    }
    await stop();
  })();
}
