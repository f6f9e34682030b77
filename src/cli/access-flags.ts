/**
 * Who may reach an export and what they may do: --read-only (-r) for every device kind, and the --tls* flags of a
 * network listener (modelled on nbdkit's and qemu-nbd's), parsed into the options the devices and the listener take.
 * The TLS credentials are loaded and checked here, so a bad certificate or an exposed key is a usage error at start.
 */
import { TlsConfigError, type TlsMode, type TlsServerConfig, loadTlsConfig } from "../engine/tls.ts";

export const ACCESS_FLAGS = {
  "read-only": { type: "boolean", help: "serve read-only (also -r): advertised so, the kernel device too; writes fail with EPERM; the store is never changed" },
  tls: { type: "string", value: "MODE", help: "with --listen: off (default), on (STARTTLS offered) or require (plain-text clients refused)" },
  "tls-certificates": { type: "string", value: "DIR", help: "TLS credentials in the qemu layout: ca-cert.pem, server-cert.pem, server-key.pem (key 0600)" },
  "tls-verify-peer": { type: "boolean", help: "TLS clients must present a certificate signed by DIR/ca-cert.pem (client authentication)" },
  "tls-psk": { type: "string", value: "FILE", help: "TLS with pre-shared keys: not available on this runtime (see README, Access); refused with the reason" },
} as const;

type AccessFlag = keyof typeof ACCESS_FLAGS;

/** Short spellings of flags, as nbdkit and qemu-nbd have them. */
export const SHORT_FLAGS: Readonly<Record<string, AccessFlag>> = { r: "read-only" };

export interface AccessCliOptions {
  readonly readOnly: boolean;
  /** The listener's TLS settings, loaded and checked; undefined for --tls off. */
  readonly tls: TlsServerConfig | undefined;
}

function isTlsMode(text: string): text is TlsMode {
  return text === "off" || text === "on" || text === "require";
}

export function parseAccessFlags(
  value: (name: AccessFlag) => string | boolean | undefined,
  listen: string | undefined,
  fail: (message: string) => never,
): AccessCliOptions {
  const readOnly = value("read-only") === true;
  const mode = String(value("tls") ?? "off");
  if (!isTlsMode(mode)) return fail(`--tls takes off, on or require, not "${mode}"`);
  if (value("tls-psk") !== undefined) {
    return fail(
      "--tls-psk: this runtime cannot complete a PSK handshake (Bun's TLS, BoringSSL, never calls a server's pskCallback, so no PSK " +
        "cipher suite is ever agreed); use X.509 certificates instead: --tls-certificates DIR, and --tls-verify-peer to authenticate clients",
    );
  }
  const dir = value("tls-certificates");
  const verifyPeer = value("tls-verify-peer") === true;
  if (mode === "off") {
    if (dir !== undefined || verifyPeer) return fail("--tls-certificates and --tls-verify-peer need --tls on or --tls require");
    return { readOnly, tls: undefined };
  }
  if (listen === undefined) return fail(`--tls ${mode} applies to network exports: add --listen (the kernel device needs no TLS)`);
  if (dir === undefined) return fail(`--tls ${mode} needs --tls-certificates DIR (ca-cert.pem, server-cert.pem, server-key.pem)`);
  try {
    return { readOnly, tls: loadTlsConfig(mode, String(dir), verifyPeer) };
  } catch (error) {
    if (error instanceof TlsConfigError) return fail(error.message);
    throw error;
  }
}
