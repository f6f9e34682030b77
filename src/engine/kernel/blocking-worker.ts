/** The Worker behind blocking.ts: performs one blocking kernel call and posts its outcome. */
import { closeSync, fsyncSync, openSync } from "node:fs";
import { LibcError, ioctl } from "../../ffi/libc.ts";
import type { BlockingCall, BlockingResult } from "./blocking.ts";
import { NbdNetlink } from "./nbd-netlink.ts";

declare const self: Worker;

function perform(call: BlockingCall): number {
  switch (call.op) {
    case "ioctl":
      return ioctl(call.fd, call.request, call.arg);
    case "netlink-disconnect": {
      const netlink = NbdNetlink.open();
      if (netlink === undefined) throw new Error("the kernel has no nbd netlink family (was the nbd module unloaded?)");
      try {
        netlink.disconnect(call.index);
      } finally {
        netlink.close();
      }
      return 0;
    }
    case "fsync": {
      const fd = openSync(call.path, "r");
      try {
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      return 0;
    }
  }
}

self.onmessage = (event: MessageEvent<BlockingCall>) => {
  let reply: BlockingResult;
  try {
    reply = { ok: true, result: perform(event.data) };
  } catch (error) {
    reply =
      error instanceof LibcError
        ? { ok: false, call: error.call, errno: error.errno, detail: error.detail, message: error.message }
        : { ok: false, message: error instanceof Error ? error.message : String(error) };
  }
  postMessage(reply);
};
