/**
 * A hand-made HTTP server on loopback, for what the real test servers (s3rver, Swift, azurite: started elsewhere,
 * always with --disableTelemetry) cannot be made to do:
 * cut a GET's body off mid-answer. Every GET of an object gets the same 64-byte object (or the range of it that a
 * `Range` or `x-ms-range` header asks for, as a 206), with the headers S3, Swift and Azure clients look for; the
 * first `cut` of them are closed after 10 bytes of the body, as a server that drops a kept-alive connection does.
 */
import net from "node:net";

export const CUT_OBJECT = Buffer.alloc(64, 7);

export interface CuttingServer {
  /** `http://127.0.0.1:PORT`, no trailing slash. */
  readonly url: string;
  /** How many GETs of the object came (requests `empty` answered are not counted). */
  gets(): number;
  close(): void;
}

export interface CuttingServerOptions {
  /** How many GETs, the first ones, are cut off after 10 bytes of the body. */
  readonly cut: number;
  /** Requests answered with a 200, these headers and no body instead (Swift's auth v1), by path; undefined: none. */
  readonly empty?: (path: string, url: string) => Record<string, string> | undefined;
}

/** The head of an HTTP/1.1 answer: status line, headers, blank line. */
function head(status: string, headers: Record<string, string | number>): string {
  return `HTTP/1.1 ${status}\r\n${Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join("")}\r\n`;
}

export async function startCuttingServer(options: CuttingServerOptions): Promise<CuttingServer> {
  let gets = 0;
  let url = "";
  const answer = (socket: net.Socket, request: string): void => {
    const [method = "", path = ""] = request.split("\r\n", 1)[0]!.split(" ");
    const extra = options.empty?.(path, url);
    if (extra !== undefined) {
      socket.write(head("200 OK", { ...extra, "Content-Length": 0 }));
      return;
    }
    if (method !== "GET") {
      socket.write(head("405 Method Not Allowed", { "Content-Length": 0 }));
      return;
    }
    gets++;
    const range = /^(?:x-ms-)?range: *bytes=(\d+)-(\d+)\s*$/im.exec(request);
    const from = range === null ? 0 : Number(range[1]);
    const to = range === null ? CUT_OBJECT.length - 1 : Math.min(Number(range[2]), CUT_OBJECT.length - 1);
    const body = CUT_OBJECT.subarray(from, to + 1);
    const headers: Record<string, string | number> = {
      "Content-Length": body.length,
      ETag: '"abc"',
      "Content-Type": "application/octet-stream",
      "Last-Modified": new Date(0).toUTCString(),
      "x-ms-blob-type": "BlockBlob",
      "x-ms-request-id": "cutting-server",
    };
    if (range !== null) headers["Content-Range"] = `bytes ${from}-${to}/${CUT_OBJECT.length}`;
    socket.write(head(range === null ? "200 OK" : "206 Partial Content", headers));
    if (gets <= options.cut) {
      socket.write(body.subarray(0, 10));
      setTimeout(() => socket.destroy(), 20);
    } else socket.write(body);
  };
  const server = net.createServer((socket) => {
    let pending = "";
    socket.on("error", () => {});
    socket.on("data", (chunk) => {
      // Requests without bodies (GET, HEAD, auth): one ends at the first blank line.
      pending += chunk.toString("latin1");
      for (let end = pending.indexOf("\r\n\r\n"); end >= 0 && !socket.destroyed; end = pending.indexOf("\r\n\r\n")) {
        const request = pending.slice(0, end);
        pending = pending.slice(end + 4);
        answer(socket, request);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  url = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  return { url, gets: () => gets, close: () => server.close() };
}
