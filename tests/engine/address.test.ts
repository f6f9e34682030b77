// Listen addresses and the URIs printed for clients.
import { describe, expect, test } from "bun:test";
import { AddressError, exportUri, parseListenAddress } from "../../src/engine/address.ts";

describe("listen addresses", () => {
  test("unix paths, tcp with and without host, IPv6 in brackets", () => {
    expect(parseListenAddress("unix:/run/usbd.sock")).toEqual({ kind: "unix", path: "/run/usbd.sock" });
    expect(parseListenAddress("tcp:10809")).toEqual({ kind: "tcp", host: "127.0.0.1", port: 10809 });
    expect(parseListenAddress("tcp:0.0.0.0:10809")).toEqual({ kind: "tcp", host: "0.0.0.0", port: 10809 });
    expect(parseListenAddress("tcp:[::1]:10809")).toEqual({ kind: "tcp", host: "::1", port: 10809 });
  });

  test("anything else is refused with an example", () => {
    expect(() => parseListenAddress("/tmp/x.sock")).toThrow(AddressError);
    expect(() => parseListenAddress("tcp:host:99999")).toThrow(/above 65535/);
  });

  test("URIs follow the NBD URI specification", () => {
    expect(exportUri({ kind: "unix", path: "/tmp/a.sock" }, "disk")).toBe("nbd+unix:///disk?socket=/tmp/a.sock");
    expect(exportUri({ kind: "tcp", host: "::1", port: 10809 }, "a b")).toBe("nbd://[::1]:10809/a%20b");
  });
});
