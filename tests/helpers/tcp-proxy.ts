/**
 * A TCP proxy on loopback in front of a real server, for faults the server cannot be made to show on demand (an SSH
 * connection dropped in the middle of a read, an answer held back while a test changes a file). The stream is
 * encrypted, so the plan goes by byte counts: for each chunk the server sends, `plan` is asked with the connection's
 * number (1, 2, ... in the order they came) and the bytes the server has sent on it so far, this chunk included.
 */
import net from "node:net";

/** `pass`: forward the chunk; `cut`: drop it and close both sides; a promise: hold the chunk (and all after it) until it settles. */
export type ProxyVerdict = "pass" | "cut" | Promise<void>;

export interface TcpProxy {
  readonly port: number;
  /** How many connections came so far. */
  connections(): number;
  close(): void;
}

export async function startTcpProxy(target: { host: string; port: number }, plan: (connection: number, fromServer: number) => ProxyVerdict): Promise<TcpProxy> {
  let connections = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const index = ++connections;
    const upstream = net.connect(target.port, target.host);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("error", () => {});
      s.on("close", () => {
        sockets.delete(s);
        client.destroy();
        upstream.destroy();
      });
    }
    let fromServer = 0;
    client.on("data", (chunk) => upstream.write(chunk));
    upstream.on("data", (chunk) => {
      fromServer += chunk.length;
      const verdict = plan(index, fromServer);
      if (verdict === "pass") client.write(chunk);
      else if (verdict === "cut") {
        client.destroy();
        upstream.destroy();
      } else {
        upstream.pause();
        void verdict.finally(() => {
          client.write(chunk);
          upstream.resume();
        });
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    connections: () => connections,
    close: () => {
      server.close();
      for (const s of sockets) s.destroy();
    },
  };
}
