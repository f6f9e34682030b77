/**
 * Certificates for TLS tests and the TLS benchmark, made with openssl in the qemu directory layout: a CA, a server
 * directory (ca-cert.pem, server-cert.pem for localhost and 127.0.0.1, server-key.pem 0600) and client directories
 * (ca-cert.pem plus client-cert.pem / client-key.pem), one of them holding a certificate from another CA.
 */
import { chmodSync, copyFileSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export interface Pki {
  /** --tls-certificates for the server. */
  readonly server: string;
  /** A client with a certificate the server's CA signed. */
  readonly client: string;
  /** A client that trusts the server's CA but has no certificate of its own. */
  readonly clientWithoutCert: string;
  /** A client that trusts the server's CA and presents a certificate of another CA. */
  readonly clientOtherCa: string;
}

function openssl(args: readonly string[], cwd: string): void {
  const r = Bun.spawnSync(["openssl", ...args], { cwd, stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`openssl ${args.join(" ")} failed: ${r.stderr.toString()}`);
}

/** A P-256 key and a certificate for `cn`, signed by the CA in `ca` (a self-signed CA when `ca` is undefined). */
function issue(dir: string, name: string, cn: string, ca: string | undefined, extensions: string): void {
  writeFileSync(join(dir, `${name}.ext`), extensions);
  const key = `${name}-key.pem`;
  const cert = `${name}-cert.pem`;
  if (ca === undefined) {
    openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert, "-days", "30", "-subj", `/CN=${cn}`, "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"], dir);
  } else {
    openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", `${name}.csr`, "-subj", `/CN=${cn}`], dir);
    openssl(["x509", "-req", "-in", `${name}.csr`, "-CA", join(ca, "ca-cert.pem"), "-CAkey", join(ca, "ca-key.pem"), "-CAcreateserial", "-out", cert, "-days", "30", "-extfile", `${name}.ext`], dir);
  }
  chmodSync(join(dir, key), 0o600);
}

/** Makes the whole set under `root` (which must exist). */
export function makePki(root: string): Pki {
  const dirs = { ca: join(root, "ca"), otherCa: join(root, "other-ca"), server: join(root, "server"), client: join(root, "client"), clientWithoutCert: join(root, "client-nocert"), clientOtherCa: join(root, "client-other-ca") };
  for (const d of Object.values(dirs)) mkdirSync(d, { recursive: true });
  issue(dirs.ca, "ca", "usbd-tui test CA", undefined, "");
  issue(dirs.otherCa, "ca", "another CA", undefined, "");
  issue(dirs.server, "server", "localhost", dirs.ca, "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature\n");
  issue(dirs.client, "client", "client", dirs.ca, "extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature\n");
  issue(dirs.clientOtherCa, "client", "intruder", dirs.otherCa, "extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature\n");
  for (const d of [dirs.server, dirs.client, dirs.clientWithoutCert, dirs.clientOtherCa]) copyFileSync(join(dirs.ca, "ca-cert.pem"), join(d, "ca-cert.pem"));
  return { server: dirs.server, client: dirs.client, clientWithoutCert: dirs.clientWithoutCert, clientOtherCa: dirs.clientOtherCa };
}
