/**
 * TLS settings of a network listener: the mode (--tls), the X.509 credentials in the qemu directory layout
 * (--tls-certificates DIR: ca-cert.pem, server-cert.pem, server-key.pem) and client authentication
 * (--tls-verify-peer), checked once at start so that a mistake is one line and exit 2, not a failing handshake.
 */
import { X509Certificate, createPrivateKey } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { type SecureContext, createSecureContext } from "node:tls";
import type { TlsMode } from "./protocol/handshake.ts";

export type { TlsMode } from "./protocol/handshake.ts";

/** A TLS setting that cannot work: the CLI shows it as a usage error (exit 2). */
export class TlsConfigError extends Error {}

/** What a listener needs to offer TLS. */
export interface TlsServerConfig {
  readonly mode: Exclude<TlsMode, "off">;
  /** The --tls-certificates directory, for messages and the printed connection help. */
  readonly dir: string;
  /** Clients must present a certificate signed by ca-cert.pem. */
  readonly verifyPeer: boolean;
  readonly context: SecureContext;
}

function readPem(dir: string, name: string, secret: boolean): string {
  const file = path.join(dir, name);
  let stat: fs.Stats;
  try {
    stat = fs.statSync(file);
  } catch {
    throw new TlsConfigError(`--tls-certificates ${dir}: ${name} is missing (the directory needs ca-cert.pem, server-cert.pem and server-key.pem, as qemu-nbd and nbdkit use)`);
  }
  if (!stat.isFile()) throw new TlsConfigError(`--tls-certificates: ${file} is not a regular file`);
  if (secret && (stat.mode & 0o077) !== 0) {
    const mode = (stat.mode & 0o777).toString(8).padStart(3, "0");
    throw new TlsConfigError(`TLS key file ${file} is readable by other users (mode ${mode}): run chmod 600 ${file}`);
  }
  try {
    return fs.readFileSync(file, "utf8");
  } catch (error) {
    throw new TlsConfigError(`--tls-certificates: cannot read ${file}: ${error instanceof Error ? error.message : String(error)}`);
  }
}

/** Loads and checks the credentials in `dir`: each file parses, the key belongs to the certificate, nothing has expired. */
export function loadTlsConfig(mode: Exclude<TlsMode, "off">, dir: string, verifyPeer: boolean, now = new Date()): TlsServerConfig {
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new TlsConfigError(`--tls-certificates ${dir} is not a directory`);
  const certPem = readPem(dir, "server-cert.pem", false);
  const keyPem = readPem(dir, "server-key.pem", true);
  const caPem = fs.existsSync(path.join(dir, "ca-cert.pem")) || verifyPeer ? readPem(dir, "ca-cert.pem", false) : undefined;
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(certPem);
  } catch (error) {
    throw new TlsConfigError(`${path.join(dir, "server-cert.pem")} is not a PEM certificate: ${error instanceof Error ? error.message : String(error)}`);
  }
  let matches: boolean;
  try {
    matches = cert.checkPrivateKey(createPrivateKey(keyPem));
  } catch (error) {
    throw new TlsConfigError(`${path.join(dir, "server-key.pem")} is not a PEM private key: ${error instanceof Error ? error.message : String(error)}`);
  }
  if (!matches) throw new TlsConfigError(`${path.join(dir, "server-key.pem")} is not the key of server-cert.pem in the same directory; put the matching key there`);
  if (new Date(cert.validTo) < now) throw new TlsConfigError(`${path.join(dir, "server-cert.pem")} expired on ${cert.validTo}; issue a new certificate`);
  if (caPem !== undefined) {
    try {
      new X509Certificate(caPem);
    } catch (error) {
      throw new TlsConfigError(`${path.join(dir, "ca-cert.pem")} is not a PEM certificate: ${error instanceof Error ? error.message : String(error)}`);
    }
  }
  const context = createSecureContext({ cert: certPem, key: keyPem, ...(caPem === undefined ? {} : { ca: caPem }), minVersion: "TLSv1.2" });
  return { mode, dir, verifyPeer, context };
}

/** Whether a TCP bind address only reaches this machine. */
export function isLoopbackHost(host: string): boolean {
  return host === "localhost" || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host) || /^::ffff:127\./i.test(host);
}
