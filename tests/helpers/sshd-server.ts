/**
 * Debian's openssh-server for the sftp suites: `sshd -D -e` on 127.0.0.1 on a free port, with its own host key,
 * user key, authorized_keys and config in a temporary directory (the system's /etc/ssh is never read), sftp through
 * internal-sftp (OpenSSH's sftp-server, with posix-rename and fsync). The one thing outside the directory is
 * /run/sshd, the privilege-separation directory sshd insists on (created empty when missing, as Debian's init does).
 * `stop()` ends the listener and every session process it forked, as a server going down would.
 */
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { ObjectStoreConfig } from "../../src/devices/objstore/store/config.ts";
import { freePort } from "./ports.ts";
import { waitFor, watch, type Watched } from "./process.ts";

export interface SshServer {
  readonly host: "127.0.0.1";
  readonly port: number;
  readonly user: string;
  /** The client's private key file (authorized for `user`). */
  readonly keyFile: string;
  /** The server's host key fingerprint, `SHA256:...` as ssh-keygen -l prints it. */
  readonly fingerprint: string;
  /** A directory for objects (owned by the user). */
  readonly dataDir: string;
  readonly directory: string;
  stop(): Promise<void>;
  restart(): Promise<void>;
  cleanup(): Promise<void>;
}

function keygen(file: string, comment: string): void {
  const r = Bun.spawnSync(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", file], { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`ssh-keygen failed: ${r.stderr.toString()}`);
}

/** OpenSSH's fingerprint of a public key file's key. */
function fingerprintOf(pubFile: string): string {
  const blob = Buffer.from(fs.readFileSync(pubFile, "utf8").trim().split(/\s+/)[1]!, "base64");
  return `SHA256:${createHash("sha256").update(blob).digest("base64").replace(/=+$/, "")}`;
}

/** The pids whose parent is `pid` (sshd's per-connection children). */
function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid === pid) out.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

export async function startSshd(options: { directory?: string } = {}): Promise<SshServer> {
  const owned = options.directory === undefined;
  const dir = options.directory ?? fs.mkdtempSync(path.join(os.tmpdir(), "usbd-sshd-"));
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  // os.userInfo() says "unknown" under Bun here; id(1) asks the system.
  const user = Bun.spawnSync(["id", "-un"]).stdout.toString().trim();
  const hostKey = path.join(dir, "host_ed25519");
  const keyFile = path.join(dir, "client_ed25519");
  keygen(hostKey, "usbd-test-host");
  keygen(keyFile, "usbd-test-client");
  fs.copyFileSync(`${keyFile}.pub`, path.join(dir, "authorized_keys"));
  const dataDir = path.join(dir, "data");
  fs.mkdirSync(dataDir, { mode: 0o700 });
  fs.mkdirSync("/run/sshd", { recursive: true, mode: 0o755 });
  const port = await freePort();
  const config = path.join(dir, "sshd_config");
  fs.writeFileSync(
    config,
    [
      `Port ${port}`,
      "ListenAddress 127.0.0.1",
      `HostKey ${hostKey}`,
      `PidFile ${path.join(dir, "sshd.pid")}`,
      `AuthorizedKeysFile ${path.join(dir, "authorized_keys")}`,
      "PermitRootLogin prohibit-password",
      "PubkeyAuthentication yes",
      "PasswordAuthentication yes",
      "KbdInteractiveAuthentication no",
      "UsePAM no",
      // The temporary directory is not laid out as ~/.ssh is; the key files themselves are 0600.
      "StrictModes no",
      "Subsystem sftp internal-sftp",
      "LogLevel INFO",
      "MaxStartups 100",
      "MaxSessions 100",
      "",
    ].join("\n"),
  );
  const check = Bun.spawnSync(["/usr/sbin/sshd", "-t", "-f", config], { stdout: "pipe", stderr: "pipe" });
  if (check.exitCode !== 0) throw new Error(`sshd -t refused ${config}: ${check.stderr.toString()}`);

  let running: Watched | undefined;
  const launch = async (): Promise<void> => {
    const w = watch(["/usr/sbin/sshd", "-D", "-e", "-f", config]);
    running = w;
    await waitFor("sshd listening", w, () => (w.stderr().includes(`Server listening on 127.0.0.1 port ${port}`) ? true : undefined), 15_000);
  };
  const stop = async (): Promise<void> => {
    const w = running;
    running = undefined;
    if (w === undefined) return;
    // The sessions first: they hold the listener's stdout and stderr open, so its output would never end.
    for (const pid of childrenOf(w.proc.pid)) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    await w.stop("SIGTERM", 5_000);
  };
  await launch();
  return {
    host: "127.0.0.1",
    port,
    user,
    keyFile,
    fingerprint: fingerprintOf(`${hostKey}.pub`),
    dataDir,
    directory: dir,
    stop,
    async restart() {
      await stop();
      await launch();
    },
    async cleanup() {
      await stop();
      if (owned) fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The sftp kind's configuration for `server`, with objects under `dataDir/<name>`. */
export function sftpConfig(server: SshServer, name = "usbd"): ObjectStoreConfig {
  return {
    host: server.host,
    port: server.port,
    user: server.user,
    privateKeyFile: server.keyFile,
    path: path.join(server.dataDir, name),
    hostFingerprint: server.fingerprint,
  };
}
