/**
 * The connection help for a TLS export: nbds:// URIs with the client's certificate directory for libnbd's tools
 * (nbdinfo, nbdcopy, nbdsh), and qemu's tls-creds-x509 object, which qemu takes with --image-opts rather than a URI.
 */
import type { ListenAddress } from "../engine/address.ts";

export interface TlsHint {
  /** The server's --tls-certificates directory: on this machine it also holds the CA a client checks against. */
  readonly dir: string;
  readonly verifyPeer: boolean;
  readonly address: ListenAddress;
}

/** `uri` (nbds://...) with libnbd's tls-certificates parameter. */
export function tlsUri(uri: string, dir: string): string {
  return `${uri}${uri.includes("?") ? "&" : "?"}tls-certificates=${dir}`;
}

export function tlsConnectHints(uri: string, name: string, tls: TlsHint): string[] {
  const withCerts = tlsUri(uri, tls.dir);
  const where = tls.address.kind === "unix" ? `server.type=unix,server.path=${tls.address.path}` : `server.type=inet,server.host=${tls.address.host},server.port=${tls.address.port}`;
  // Over a Unix socket there is no host name to check the server's certificate against: qemu needs one given.
  const hostname = tls.address.kind === "unix" ? ",tls-hostname=localhost" : "";
  const object = `--object tls-creds-x509,id=tls0,dir=${tls.dir},endpoint=client`;
  return [
    `  URI:      ${withCerts}`,
    `  nbdinfo:  nbdinfo '${withCerts}'`,
    `  nbdcopy:  nbdcopy '${withCerts}' disk.img   (and back: nbdcopy disk.img '${withCerts}')`,
    `  qemu:     qemu-img info ${object} --image-opts driver=nbd,${where},export=${name},tls-creds=tls0${hostname}`,
    `  TLS:      ${tls.dir} must hold ca-cert.pem on the client${tls.verifyPeer ? ", and client-cert.pem + client-key.pem signed by that CA (--tls-verify-peer)" : ""}`,
  ];
}
