// Socket calls through libc: descriptors made outside Bun, connected to Bun listeners, options and credentials.
import { describe, expect, test } from "bun:test";
import { closeSync, openSync, writeSync } from "node:fs";
import { closeFd } from "../../src/ffi/libc.ts";
import {
  peerClosed,
  AF_UNIX,
  SOCK_STREAM,
  SOL_SOCKET,
  SO_RCVBUF,
  SO_RCVTIMEO,
  SO_SNDBUF,
  connectUnix,
  getSocketOption,
  openSocket,
  peerCredentials,
  receive,
  recvNonBlocking,
  sendAll,
  setSocketTimeout,
  socketpair,
} from "../../src/ffi/sockets.ts";
import { enlargeSocketBuffers } from "../../src/engine/socket-buffers.ts";

describe("socketpair", () => {
  test("bytes written on one end arrive on the other, in both directions", () => {
    const [a, b] = socketpair();
    try {
      sendAll(a, new Uint8Array([1, 2, 3]));
      const into = new Uint8Array(8);
      expect(receive(b, into)).toBe(3);
      expect([...into.subarray(0, 3)]).toEqual([1, 2, 3]);
      sendAll(b, new TextEncoder().encode("pong"));
      expect(receive(a, into)).toBe(4);
      expect(new TextDecoder().decode(into.subarray(0, 4))).toBe("pong");
      expect(recvNonBlocking(a, into)).toBe(-1);
      closeFd(b);
      expect(receive(a, into)).toBe(0);
    } finally {
      closeFd(a);
    }
  });
});

describe("a libc socket connected to a Bun listener", () => {
  test("on an abstract name: Bun accepts it, the two exchange bytes, and the peer is this process", async () => {
    const name = `\0usbd-test-${process.pid}-${Math.random().toString(36).slice(2)}`;
    const accepted: number[] = [];
    const listener = Bun.listen<undefined>({
      unix: name,
      socket: {
        open(socket) {
          const fd = (socket as unknown as { fd: number }).fd;
          accepted.push(peerCredentials(fd).pid);
        },
        data(socket, chunk) {
          socket.write(Buffer.concat([Buffer.from("echo:"), chunk]));
        },
      },
    });
    const fd = openSocket(AF_UNIX, SOCK_STREAM);
    try {
      connectUnix(fd, name);
      sendAll(fd, new TextEncoder().encode("hi"));
      const into = new Uint8Array(16);
      let n = -1;
      for (let i = 0; i < 200 && n < 0; i++) {
        await Bun.sleep(5);
        n = recvNonBlocking(fd, into);
      }
      expect(new TextDecoder().decode(into.subarray(0, n))).toBe("echo:hi");
      expect(accepted).toEqual([process.pid]);
    } finally {
      closeFd(fd);
      listener.stop(true);
    }
  });

  test("connecting to a name nobody listens on names the call and ECONNREFUSED", () => {
    const fd = openSocket(AF_UNIX, SOCK_STREAM);
    try {
      expect(() => connectUnix(fd, `\0usbd-nobody-${process.pid}`)).toThrow(/^connect\(@usbd-nobody-\d+\): ECONNREFUSED/);
    } finally {
      closeFd(fd);
    }
  });
});

describe("socket options", () => {
  test("enlargeSocketBuffers raises SO_SNDBUF and SO_RCVBUF on a socket and ignores a non-socket", () => {
    const [a, b] = socketpair();
    try {
      const before = getSocketOption(a, SOL_SOCKET, SO_SNDBUF);
      enlargeSocketBuffers(a, 4 * 1024 * 1024);
      expect(getSocketOption(a, SOL_SOCKET, SO_SNDBUF)).toBeGreaterThan(before);
      expect(getSocketOption(a, SOL_SOCKET, SO_RCVBUF)).toBeGreaterThan(before);
    } finally {
      closeSync(a);
      closeSync(b);
    }
    const fd = openSync("/dev/null", "r");
    try {
      expect(() => enlargeSocketBuffers(fd)).not.toThrow();
      expect(() => getSocketOption(fd, SOL_SOCKET, SO_SNDBUF)).toThrow(/getsockopt.*ENOTSOCK/);
    } finally {
      closeSync(fd);
    }
  });

  test("a receive timeout turns a blocking recv with nothing to read into -1 after the timeout", () => {
    const [a, b] = socketpair();
    try {
      setSocketTimeout(a, SO_RCVTIMEO, 50);
      const started = performance.now();
      expect(receive(a, new Uint8Array(4))).toBe(-1);
      expect(performance.now() - started).toBeGreaterThanOrEqual(40);
      writeSync(b, new Uint8Array([9]));
      expect(receive(a, new Uint8Array(4))).toBe(1);
    } finally {
      closeFd(a);
      closeFd(b);
    }
  });
});

describe("peerClosed", () => {
  test("is false while the peer is there, true once it closed its socket, even with bytes still unread", () => {
    const [a, b] = socketpair();
    expect(peerClosed(a)).toBe(false);
    sendAll(b, new Uint8Array([1, 2, 3]));
    expect(peerClosed(a)).toBe(false);
    closeFd(b);
    // Three bytes are still waiting to be read: a peek would find them, poll sees the hang-up.
    expect(peerClosed(a)).toBe(true);
    closeFd(a);
  });
});
