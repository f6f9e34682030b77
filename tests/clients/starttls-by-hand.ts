/**
 * An NBD client that does STARTTLS by hand with node:net and node:tls, for the orders of bytes real clients do not
 * produce on demand: a ClientHello sent in the same write as the STARTTLS option (before its acknowledgement), and
 * a STARTTLS behind thousands of options whose replies the client has not read yet. After TLS is up it sends
 * NBD_OPT_LIST inside TLS and returns that option's reply types.
 */
import net from "node:net";
import { Duplex } from "node:stream";
import tls from "node:tls";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { OPT, option } from "../protocol/raw-client.ts";

const REPLY_HEADER = 20;
const GREETING = 18;

export interface ByHandOptions {
  /** Send the TLS ClientHello in the same write as the STARTTLS option. */
  readonly helloWithStartTls: boolean;
  /** NBD_OPT_LIST options sent before STARTTLS in the same write. */
  readonly listsBefore: number;
  /** Milliseconds to leave the server's replies unread after sending (its socket fills up meanwhile). */
  readonly readAfterMs: number;
}

export interface ByHandResult {
  /** Plain-text option replies read before the STARTTLS acknowledgement (which is not counted). */
  readonly plainReplies: number;
  /** Reply types of NBD_OPT_LIST sent inside TLS. */
  readonly listInTls: readonly number[];
  readonly protocol: string | null;
}

/** Bytes from the socket in order, read by exact counts. */
class Inbox {
  private bytes = Buffer.alloc(0);
  private wake: (() => void) | undefined;
  closed = false;

  push(chunk: Buffer): void {
    this.bytes = Buffer.concat([this.bytes, chunk]);
    this.wake?.();
  }

  end(): void {
    this.closed = true;
    this.wake?.();
  }

  async take(n: number): Promise<Buffer> {
    while (this.bytes.length < n) {
      if (this.closed) throw new Error(`the server closed the connection (${this.bytes.length} of ${n} bytes read)`);
      await new Promise<void>((resolve) => (this.wake = resolve));
      this.wake = undefined;
    }
    const out = this.bytes.subarray(0, n);
    this.bytes = this.bytes.subarray(n);
    return out;
  }

  rest(): Buffer {
    const out = this.bytes;
    this.bytes = Buffer.alloc(0);
    return out;
  }
}

async function readReply(inbox: Inbox): Promise<{ opt: number; type: number }> {
  const header = await inbox.take(REPLY_HEADER);
  await inbox.take(header.readUInt32BE(16));
  return { opt: header.readUInt32BE(8), type: header.readUInt32BE(12) };
}

/** Runs the exchange against the Unix socket `path`, with the client certificate in `certDir`. */
export async function startTlsByHand(path: string, certDir: string, o: ByHandOptions): Promise<ByHandResult> {
  const raw = net.connect(path);
  const inbox = new Inbox();
  let tlsWire: Duplex | undefined;
  raw.on("data", (chunk: Buffer) => (tlsWire ? tlsWire.push(chunk) : inbox.push(chunk)));
  raw.on("end", () => (tlsWire ? tlsWire.push(null) : inbox.end()));
  raw.on("error", () => inbox.end());
  try {
    await inbox.take(GREETING);
    raw.write(Buffer.from([0, 0, 0, 3]));
    const options = Buffer.concat([...Array.from({ length: o.listsBefore }, () => option(OPT.LIST)), option(OPT.STARTTLS)]);

    let sentOptions = false;
    const wire = new Duplex({
      read() {},
      write(chunk: Buffer, _encoding, done) {
        if (!sentOptions) {
          sentOptions = true;
          raw.write(Buffer.concat([options, chunk]), () => done());
        } else {
          raw.write(chunk, () => done());
        }
      },
    });
    if (!o.helloWithStartTls) {
      sentOptions = true;
      raw.write(options);
    }
    let ackSeen: () => void = () => undefined;
    const acknowledged = new Promise<void>((resolve) => (ackSeen = resolve));
    const secured = new Promise<tls.TLSSocket>((resolve, reject) => {
      const start = (): void => {
        const secure = tls.connect({
          socket: wire,
          ca: readFileSync(join(certDir, "ca-cert.pem")),
          cert: readFileSync(join(certDir, "client-cert.pem")),
          key: readFileSync(join(certDir, "client-key.pem")),
          checkServerIdentity: () => undefined,
        });
        secure.once("secureConnect", () => resolve(secure));
        secure.once("error", reject);
      };
      // The ClientHello goes out when TLS starts: before the acknowledgement, or only after it was read.
      if (o.helloWithStartTls) start();
      else void acknowledged.then(start);
    });

    raw.pause();
    await Bun.sleep(o.readAfterMs);
    raw.resume();
    let plainReplies = 0;
    const ackRead = (async () => {
      for (;;) {
        const reply = await readReply(inbox);
        if (reply.opt === OPT.STARTTLS) {
          if (reply.type !== 1) throw new Error(`STARTTLS was answered ${reply.type.toString(16)}`);
          break;
        }
        plainReplies++;
      }
      // From here the bytes are TLS records.
      tlsWire = wire;
      const rest = inbox.rest();
      if (rest.length > 0) wire.push(rest);
      ackSeen();
    })();
    await ackRead;
    const socket = await secured;

    const inTls = new Inbox();
    socket.on("data", (chunk: Buffer) => inTls.push(chunk));
    socket.on("end", () => inTls.end());
    socket.write(option(OPT.LIST));
    const listInTls: number[] = [];
    for (;;) {
      const reply = await readReply(inTls);
      listInTls.push(reply.type);
      if (reply.type !== 2) break;
    }
    const protocol = socket.getProtocol();
    socket.write(option(OPT.ABORT));
    socket.end();
    return { plainReplies, listInTls, protocol };
  } finally {
    raw.destroy();
  }
}
