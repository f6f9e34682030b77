/**
 * azurite is only ever started by tests/helpers/azurite-server.ts, always with --disableTelemetry (no traffic off the machine).
 * The remote stores bench/objstore.ts can measure besides s3rver and the local directory: azure on azurite, swift
 * and s3 on Debian's Swift (auth v1, and its s3api middleware with SigV4), sftp on openssh-server. Each is started
 * on loopback by the same helpers the tests use, data in the bench's scratch directory, once per run.
 */
import { join } from "node:path";
import { AZURITE_ACCOUNT, AZURITE_KEY, startAzurite, type AzuriteServer } from "../../tests/helpers/azurite-server.ts";
import { startSshd, type SshServer } from "../../tests/helpers/sshd-server.ts";
import { SWIFT_KEY, SWIFT_USER, startSwift, type SwiftServer } from "../../tests/helpers/swift-server.ts";

export const REMOTE_BACKENDS = ["azure", "swift", "s3api", "sftp"] as const;
export type RemoteBackend = (typeof REMOTE_BACKENDS)[number];

export const REMOTE_DESCRIPTIONS: Readonly<Record<RemoteBackend, string>> = {
  azure: "azure: azurite 3 on 127.0.0.1 (node, data on the scratch fs)",
  swift: "swift: Debian's Swift 2.30 all in one, auth v1 (python, one replica, data on the scratch fs)",
  s3api: "s3api: the s3 backend on that Swift's s3api (SigV4 checked)",
  sftp: "sftp: Debian's openssh-server 9.2 (internal-sftp, data on the scratch fs)",
};

export interface Place {
  readonly kind: string;
  readonly config: string;
  drop(): void;
}

/** Starts the servers `names` need (Swift once for swift and s3api) and hands out a place per volume. */
export class RemoteStores {
  private azurite: AzuriteServer | undefined;
  private swift: SwiftServer | undefined;
  private sshd: SshServer | undefined;

  constructor(private readonly scratch: string) {}

  async start(names: readonly string[]): Promise<void> {
    if (names.includes("azure")) this.azurite = await startAzurite({ directory: join(this.scratch, "azurite") });
    if (names.includes("swift") || names.includes("s3api")) this.swift = await startSwift({ directory: join(this.scratch, "swift") });
    if (names.includes("sftp")) this.sshd = await startSshd({ directory: join(this.scratch, "sshd") });
  }

  /** A fresh container, bucket or directory for volume `tag`; dropping it is left to the server's data directory. */
  place(name: RemoteBackend, tag: string): Place {
    const container = `b-${tag}`.toLowerCase().replace(/[^a-z0-9-]/g, "-");
    const keep = { drop: () => {} };
    switch (name) {
      case "azure":
        return { kind: "azure", config: JSON.stringify({ account: AZURITE_ACCOUNT, key: AZURITE_KEY, endpoint: this.azurite!.endpoint, container }), ...keep };
      case "swift":
        return { kind: "swift", config: JSON.stringify({ auth_url: this.swift!.authUrl, user: SWIFT_USER, key: SWIFT_KEY, container }), ...keep };
      case "s3api":
        return {
          kind: "s3",
          config: JSON.stringify({ access_key_id: SWIFT_USER, secret_key: SWIFT_KEY, endpoint: this.swift!.url, region: "us-east-1", bucket: container }),
          ...keep,
        };
      case "sftp": {
        const s = this.sshd!;
        const path = join(s.dataDir, container);
        return { kind: "sftp", config: JSON.stringify({ host: s.host, port: s.port, user: s.user, private_key_file: s.keyFile, path, host_fingerprint: s.fingerprint }), ...keep };
      }
    }
  }

  async stop(): Promise<void> {
    await Promise.all([this.azurite?.cleanup(), this.swift?.cleanup(), this.sshd?.cleanup()]);
  }
}
