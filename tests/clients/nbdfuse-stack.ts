/**
 * The stack the filesystem suites put a real filesystem on: the daemon, nbdfuse presenting its export as a file,
 * and a loop device on that file. The loop device is what mkfs, mount and fsck see.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { type Daemon, type DaemonOptions, run, runResult, startDaemon } from "./helpers.ts";

/** Daemon options with a store directory of the suite's own, so the store outlives one daemon. */
export type StackDaemonOptions = DaemonOptions & { readonly storeDir: string };

/** One daemon + nbdfuse + loop device stack, torn down in reverse order (and forcibly after a failure). */
export class NbdfuseStack {
  daemon: Daemon | undefined;
  nbdfuse: Subprocess<"ignore", "pipe", "pipe"> | undefined;
  loop: string | undefined;
  mounted = false;

  constructor(
    readonly daemonOptions: StackDaemonOptions,
    readonly fuseDir: string,
    readonly mountDir: string,
  ) {}

  get storeDir(): string {
    return this.daemonOptions.storeDir;
  }

  /** Starts the daemon, mounts its export with nbdfuse and attaches a loop device to the FUSE file. */
  async up(): Promise<string> {
    this.daemon = await startDaemon(this.daemonOptions);
    this.nbdfuse = Bun.spawn(["nbdfuse", this.fuseDir, this.daemon.uri], { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
    const file = join(this.fuseDir, "nbd");
    const deadline = Date.now() + 10_000;
    while (!existsSync(file)) {
      if (this.nbdfuse.exitCode !== null) {
        throw new Error(`nbdfuse exited with ${this.nbdfuse.exitCode}: ${await new Response(this.nbdfuse.stderr).text()}`);
      }
      if (Date.now() > deadline) throw new Error(`nbdfuse did not present ${file} within 10 s`);
      await Bun.sleep(25);
    }
    this.loop = (await run(["losetup", "--find", "--show", file])).trim();
    return this.loop;
  }

  async mount(): Promise<void> {
    await run(["mount", "-t", "ext4", this.loop!, this.mountDir]);
    this.mounted = true;
  }

  async umount(): Promise<void> {
    await run(["umount", this.mountDir]);
    this.mounted = false;
  }

  /** Detaches the loop device, unmounts FUSE, waits for nbdfuse, then stops the daemon asserting exit 0. */
  async down(): Promise<void> {
    if (this.mounted) await this.umount();
    if (this.loop !== undefined) {
      await run(["losetup", "-d", this.loop]);
      this.loop = undefined;
    }
    if (this.nbdfuse !== undefined) {
      const nbdfuse = this.nbdfuse;
      await run(["fusermount3", "-u", this.fuseDir]);
      const code = await nbdfuse.exited;
      this.nbdfuse = undefined;
      if (code !== 0) throw new Error(`nbdfuse exited with ${code} after fusermount3 -u: ${await new Response(nbdfuse.stderr).text()}`);
    }
    if (this.daemon !== undefined) {
      const daemon = this.daemon;
      this.daemon = undefined;
      await daemon.stop();
    }
  }

  /** Best-effort teardown after a failure: lazy unmounts, detach, kill; never throws. */
  async forceDown(): Promise<void> {
    if (this.mounted) await runResult(["umount", "-l", this.mountDir]).catch(() => undefined);
    this.mounted = false;
    if (this.loop !== undefined) await runResult(["losetup", "-d", this.loop]).catch(() => undefined);
    this.loop = undefined;
    if (this.nbdfuse !== undefined) {
      const r = await runResult(["fusermount3", "-u", this.fuseDir]).catch(() => undefined);
      if (r?.exitCode !== 0) await runResult(["fusermount3", "-uz", this.fuseDir]).catch(() => undefined);
      this.nbdfuse.kill("SIGKILL");
      await this.nbdfuse.exited;
      this.nbdfuse = undefined;
    }
    this.daemon?.kill();
    this.daemon = undefined;
  }
}
