/** Ports for the suites' servers and for tests of servers that are not there. */
import net from "node:net";

/** A port nothing listens on: bound once by us, then released. */
export async function deadPort(): Promise<number> {
  const probe = net.createServer();
  await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
  const port = (probe.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  return port;
}

/** A free port to give a server that cannot listen on port 0 and report it (sshd, Swift): the same as deadPort. */
export const freePort = deadPort;
