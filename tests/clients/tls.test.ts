/**
 * TLS on network exports with real clients and certificates made by openssl (tests/helpers/tls-certs.ts): nbdinfo
 * and nbdcopy over TLS on a Unix socket, qemu-img convert over TLS on TCP (--object tls-creds-x509), a plain-text
 * client refused under --tls require (with ERR_TLS_REQD, and no data served), clients refused under
 * --tls-verify-peer without a certificate or with another CA's, and the start-up refusals (exit 2, one line).
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { chmodSync, copyFileSync, cpSync, readdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { type Watched, waitFor, watch } from "../helpers/process.ts";
import { type Pki, makePki } from "../helpers/tls-certs.ts";
import { OPT, REP, infoData, option, readOptionReplies, startHandshake } from "../protocol/raw-client.ts";
import { startTlsByHand } from "./starttls-by-hand.ts";
import { removeDir, run, runResult, sha256, skipReason, tempDir, writeRandomFile } from "./helpers.ts";

setDefaultTimeout(120_000);

const ROOT = resolve(import.meta.dir, "../..");
const BUN = join(ROOT, "node_modules/.bin/bun");
const CLI = join(ROOT, "bin/usbd-tui.ts");
const MiB = 1024 * 1024;
const SIZE = 16 * MiB;
const ERR_TLS_REQD = 0x80000005;

const skip = skipReason("TLS suite", ["openssl", "nbdinfo", "nbdcopy", "qemu-img"]);

interface Server {
  readonly w: Watched;
  /** The nbds:// URI the daemon printed, without its tls-certificates parameter. */
  readonly uri: string;
  /** `uri` with a client's certificate directory. */
  as(dir: string): string;
  stop(): Promise<number>;
}

async function serve(listen: string, flags: readonly string[]): Promise<Server> {
  const w = watch([BUN, CLI, "--headless", "--dev-type=mem", `--store-size=${SIZE}`, "--listen", listen, ...flags], { cwd: ROOT });
  const printed = await waitFor("a URI line", w, () => /^\s*URI:\s+(\S+)/m.exec(w.stdout())?.[1], 20_000);
  const uri = printed.replace(/[?&]tls-certificates=[^&]*/, "");
  return {
    w,
    uri,
    as: (dir) => `${uri}${uri.includes("?") ? "&" : "?"}tls-certificates=${dir}`,
    stop: () => w.stop("SIGTERM", 20_000),
  };
}

/** Starts the daemon with `flags` expecting it to refuse: its exit code and stderr. */
async function refusal(flags: readonly string[]): Promise<{ code: number; stderr: string }> {
  const r = await runResult([BUN, CLI, "--headless", "--dev-type=mem", "--store-size=16MiB", ...flags], { cwd: ROOT, timeoutMs: 30_000 });
  return { code: r.exitCode, stderr: r.stderr.trim() };
}

let root: string;
let pki: Pki;

beforeAll(() => {
  if (skip !== undefined) return;
  root = tempDir("tls");
  pki = makePki(root);
});

afterAll(() => {
  if (root !== undefined) removeDir(root);
});

describe.skipIf(skip !== undefined)("--tls require --tls-verify-peer on a Unix socket", () => {
  let server: Server;
  let socket: string;

  beforeAll(async () => {
    socket = join(root, "nbd.sock");
    server = await serve(`unix:${socket}`, ["--tls", "require", "--tls-certificates", pki.server, "--tls-verify-peer"]);
  });

  afterAll(async () => {
    expect(await server?.stop()).toBe(0);
  });

  test("prints an nbds+unix:// URI with the certificate options", () => {
    expect(server.uri).toStartWith("nbds+unix:///usbd?socket=");
    expect(server.w.stdout()).toContain(`tls-certificates=${pki.server}`);
    expect(server.w.stdout()).toContain("tls-creds-x509");
  });

  test("nbdinfo connects with a client certificate and sees the export over TLS", async () => {
    const info = JSON.parse(await run(["nbdinfo", "--json", server.as(pki.client)]));
    expect(info.TLS).toBe(true);
    expect(info.exports[0]["export-size"]).toBe(SIZE);
  });

  test("nbdcopy writes and reads back the whole export over TLS; the checksums match", async () => {
    const source = join(root, "source.img");
    const back = join(root, "back.img");
    const sum = await writeRandomFile(source, SIZE);
    await run(["nbdcopy", source, server.as(pki.client)]);
    await run(["nbdcopy", server.as(pki.client), back]);
    expect(sha256(await Bun.file(back).bytes())).toBe(sum);
  });

  // Many replies in flight at once, small and large interleaved, encrypted by Bun's TLS layer as the reply writer
  // hands them over (tls-channel.ts): they must come back whole and in order.
  test("64 requests in flight, 4 KiB and 1 MiB: every reply comes back whole, the checksums match", async () => {
    const source = join(root, "pipelined.img");
    const sum = await writeRandomFile(source, SIZE);
    await run(["nbdcopy", source, server.as(pki.client)]);
    for (const size of ["4096", "1048576"]) {
      const back = join(root, `back-${size}.img`);
      await run(["nbdcopy", "--requests=64", `--request-size=${size}`, server.as(pki.client), back]);
      expect(sha256(await Bun.file(back).bytes())).toBe(sum);
    }
  });

  // A client may send its ClientHello without waiting for STARTTLS's acknowledgement; those bytes come in the same
  // read as the option and must reach TLS (upgradeTLS's initial data), not the plain-text handshake.
  test("a ClientHello sent in the same write as STARTTLS is not lost", async () => {
    const r = await startTlsByHand(socket, pki.client, { helloWithStartTls: true, listsBefore: 0, readAfterMs: 0 });
    expect(r.protocol).toBe("TLSv1.3");
    expect(r.listInTls).toEqual([REP.SERVER, REP.ACK]);
  });

  // TLS may only start after the last plain-text byte: 20000 refused options stay unread while the server answers
  // them (and pauses at its handshake reply limit), then STARTTLS; every refusal comes first, then TLS, in order.
  test("STARTTLS behind 20000 unread options: TLS starts after the last plain-text reply", async () => {
    const r = await startTlsByHand(socket, pki.client, { helloWithStartTls: false, listsBefore: 20_000, readAfterMs: 300 });
    expect(r.plainReplies).toBe(20_000); // each answered ERR_TLS_REQD under --tls require
    expect(r.listInTls).toEqual([REP.SERVER, REP.ACK]);
  });

  // After STARTTLS the connection runs on a second descriptor and the listener's is closed (tls-channel.ts): neither
  // may outlive the connection, and the client is still named by its process, found through the new descriptor.
  test("TLS connections leave no descriptor open, and each client is named by its process", async () => {
    const openDescriptors = () => readdirSync(`/proc/${server.w.proc.pid}/fd`).length;
    const before = openDescriptors();
    for (let i = 0; i < 10; i++) expect((await run(["nbdinfo", "--size", server.as(pki.client)])).trim()).toBe(String(SIZE));
    await waitFor("the descriptors of 10 closed connections to be closed", server.w, () => (openDescriptors() <= before ? true : undefined), 10_000);
    const log = server.w.stdout() + server.w.stderr();
    expect(log.match(/client nbdinfo \(pid \d+\) connected/g)?.length ?? 0).toBeGreaterThanOrEqual(10);
  });

  test("a plain-text client is refused: nbdinfo fails, and the raw protocol answers ERR_TLS_REQD", async () => {
    const plain = await runResult(["nbdinfo", "--json", server.uri.replace("nbds+unix", "nbd+unix")]);
    expect(plain.exitCode).not.toBe(0);
    expect(plain.stdout).not.toContain("export-size");
    const c = await startHandshake(socket);
    c.send(option(OPT.LIST));
    c.send(option(OPT.GO, infoData("usbd")));
    const replies = [...(await readOptionReplies(c)), ...(await readOptionReplies(c))];
    expect(replies.map((r) => r.type)).toEqual([ERR_TLS_REQD, ERR_TLS_REQD]);
    // EXPORT_NAME has no error reply: the server closes without sending the export's size or any data.
    c.send(option(OPT.EXPORT_NAME, Buffer.from("usbd")));
    await c.waitClosed();
    expect(c.buffered).toBe(0);
  });

  test("a client without a certificate is refused", async () => {
    const r = await runResult(["nbdinfo", "--json", server.as(pki.clientWithoutCert)]);
    expect(r.exitCode).not.toBe(0);
    expect(r.stdout).not.toContain("export-size");
  });

  test("a client with a certificate from another CA is refused", async () => {
    const r = await runResult(["nbdinfo", "--json", server.as(pki.clientOtherCa)]);
    expect(r.exitCode).not.toBe(0);
    expect(r.stdout).not.toContain("export-size");
    expect(server.w.stderr()).toContain("TLS failed");
  });
});

describe.skipIf(skip !== undefined)("--tls require on TCP with qemu-img", () => {
  let server: Server;
  let port: number;

  beforeAll(async () => {
    server = await serve("tcp:127.0.0.1:0", ["--tls", "require", "--tls-certificates", pki.server]);
    port = Number(/:(\d+)\//.exec(server.uri)![1]);
  });

  afterAll(async () => {
    expect(await server?.stop()).toBe(0);
  });

  test("qemu-img convert round-trips an image over TLS (--object tls-creds-x509)", async () => {
    const creds = `tls-creds-x509,id=tls0,dir=${pki.clientWithoutCert},endpoint=client`;
    const target = `driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=${port},export=usbd,tls-creds=tls0`;
    const source = join(root, "qemu-source.img");
    const back = join(root, "qemu-back.img");
    const sum = await writeRandomFile(source, SIZE);
    await run(["qemu-img", "convert", "--object", creds, "-n", "-f", "raw", source, "--target-image-opts", target]);
    await run(["qemu-img", "convert", "--object", creds, "--image-opts", target, "-O", "raw", back]);
    expect(sha256(await Bun.file(back).bytes())).toBe(sum);
  });
});

describe.skipIf(skip !== undefined)("--tls on", () => {
  test("offers TLS to clients that ask and serves plain-text clients too", async () => {
    const socket = join(root, "on.sock");
    const server = await serve(`unix:${socket}`, ["--tls", "on", "--tls-certificates", pki.server]);
    try {
      expect(JSON.parse(await run(["nbdinfo", "--json", server.as(pki.clientWithoutCert)])).TLS).toBe(true);
      const plain = JSON.parse(await run(["nbdinfo", "--json", `nbd+unix:///usbd?socket=${socket}`]));
      expect(plain.TLS).toBe(false);
      expect(plain.exports[0]["export-size"]).toBe(SIZE);
    } finally {
      expect(await server.stop()).toBe(0);
    }
  });
});

describe.skipIf(skip !== undefined)("TLS settings refused at start (one line, exit 2)", () => {
  const socketFlag = (name: string) => ["--listen", `unix:${join(root, `${name}.sock`)}`];

  test("a server key readable by other users", async () => {
    const dir = join(root, "exposed");
    cpSync(pki.server, dir, { recursive: true });
    chmodSync(join(dir, "server-key.pem"), 0o644);
    const r = await refusal([...socketFlag("exposed"), "--tls", "require", "--tls-certificates", dir]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("readable by other users");
    expect(r.stderr).toContain("chmod 600");
    expect(r.stderr.split("\n").filter((l) => l.includes("server-key.pem"))).toHaveLength(1);
  });

  test("a server key that is not the certificate's", async () => {
    const dir = join(root, "wrong-key");
    cpSync(pki.server, dir, { recursive: true });
    copyFileSync(join(pki.client, "client-key.pem"), join(dir, "server-key.pem"));
    const r = await refusal([...socketFlag("wrong"), "--tls", "require", "--tls-certificates", dir]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("is not the key of server-cert.pem");
  });

  test("a server key that is no key at all", async () => {
    const dir = join(root, "garbage-key");
    cpSync(pki.server, dir, { recursive: true });
    writeFileSync(join(dir, "server-key.pem"), "not a key\n", { mode: 0o600 });
    const r = await refusal([...socketFlag("garbage"), "--tls", "require", "--tls-certificates", dir]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("is not a PEM private key");
  });

  test("--tls require without certificates, --tls-verify-peer without a CA, an unknown mode", async () => {
    expect((await refusal([...socketFlag("nocerts"), "--tls", "require"])).stderr).toContain("needs --tls-certificates");
    const noCa = join(root, "no-ca");
    cpSync(pki.server, noCa, { recursive: true });
    Bun.spawnSync(["rm", join(noCa, "ca-cert.pem")]);
    const r = await refusal([...socketFlag("noca"), "--tls", "require", "--tls-certificates", noCa, "--tls-verify-peer"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("ca-cert.pem is missing");
    expect((await refusal([...socketFlag("mode"), "--tls", "maybe"])).code).toBe(2);
  });

  test("--tls-psk, which this runtime cannot serve, is refused with the reason", async () => {
    const r = await refusal([...socketFlag("psk"), "--tls", "require", "--tls-psk", join(root, "keys.psk")]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("cannot complete a PSK handshake");
  });
});

describe.skipIf(skip !== undefined)("a TCP bind reachable from the network", () => {
  test("without --tls require the daemon warns that the disk is exposed, and says how to fix it", async () => {
    const server = await serve("tcp:0.0.0.0:0", []);
    try {
      await waitFor("the warning", server.w, () => (server.w.stderr().includes("exposed") ? true : undefined), 10_000);
      expect(server.w.stderr()).toContain("reachable from the network and clients need no TLS");
      expect(server.w.stderr()).toContain("--tls require");
    } finally {
      expect(await server.stop()).toBe(0);
    }
  });

  test("with --tls require there is no warning", async () => {
    const server = await serve("tcp:0.0.0.0:0", ["--tls", "require", "--tls-certificates", pki.server]);
    try {
      expect(server.uri).toStartWith("nbds://0.0.0.0:");
      expect(server.w.stderr()).not.toContain("exposed");
    } finally {
      expect(await server.stop()).toBe(0);
    }
  });
});
