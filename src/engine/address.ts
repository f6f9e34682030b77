/**
 * Listen addresses (`unix:/path`, `tcp:HOST:PORT`) and the NBD URIs (RFC-style `nbd://` and `nbd+unix://`) that
 * clients such as nbdinfo, nbdcopy and qemu use to reach an export.
 */

export type ListenAddress =
  | { readonly kind: "unix"; readonly path: string }
  | { readonly kind: "tcp"; readonly host: string; readonly port: number };

export class AddressError extends Error {}

/** Parses `unix:/path/sock`, `tcp:HOST:PORT`, `tcp:PORT` or `tcp:[::1]:PORT` (host defaults to 127.0.0.1). */
export function parseListenAddress(spec: string): ListenAddress {
  const unix = /^unix:(.+)$/.exec(spec);
  if (unix) return { kind: "unix", path: unix[1]! };
  const tcp = /^tcp:(?:(\[[^\]]+\]|[^:]+):)?(\d+)$/.exec(spec);
  if (tcp) {
    const port = Number(tcp[2]);
    if (port > 65535) throw new AddressError(`port ${port} in "${spec}" is above 65535`);
    const host = (tcp[1] ?? "127.0.0.1").replace(/^\[(.*)\]$/, "$1");
    return { kind: "tcp", host, port };
  }
  throw new AddressError(
    `cannot read listen address "${spec}": use unix:/path/to/socket or tcp:HOST:PORT (for example tcp:127.0.0.1:10809)`,
  );
}

/** The URI a libnbd or qemu client uses for `exportName` at `address`; `tls` gives the nbds:// forms. */
export function exportUri(address: ListenAddress, exportName: string, tls = false): string {
  const name = encodeURIComponent(exportName);
  const scheme = tls ? "nbds" : "nbd";
  if (address.kind === "unix") return `${scheme}+unix:///${name}?socket=${address.path}`;
  const host = address.host.includes(":") ? `[${address.host}]` : address.host;
  return `${scheme}://${host}:${address.port}/${name}`;
}

export function describeAddress(address: ListenAddress): string {
  return address.kind === "unix" ? `unix:${address.path}` : `tcp:${address.host}:${address.port}`;
}
