/**
 * libnbd's own shell (nbdsh) against the daemon, for protocol edges other clients never send: FUA on commands where it
 * means nothing (accepted, as the spec requires once FUA is advertised), and 64 MiB requests, the largest served.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { existsSync } from "node:fs";
import { type Daemon, run, startDaemon, stopAndRemove, tempDir } from "./helpers.ts";

setDefaultTimeout(90_000);

// nbdsh is a shell wrapper around `python3 -m nbd`: call Debian's python, not whatever python3 is first on the PATH.
const PYTHON = "/usr/bin/python3";
const skip = existsSync(PYTHON) && Bun.spawnSync([PYTHON, "-c", "import nbd"]).exitCode === 0 ? undefined : "python3-libnbd (nbdsh) is not installed";

/** Runs nbdsh on the daemon's export with the base:allocation context requested, `script` after it connected. */
function nbdsh(uri: string, script: string): Promise<string> {
  const prologue = [
    "import nbd",
    "h = nbd.NBD()",
    // Client-side checks would refuse flags a command does not need; the server must see them.
    "h.set_strict_mode(h.get_strict_mode() & ~nbd.STRICT_FLAGS)",
    "h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)",
    `h.connect_uri(${JSON.stringify(uri)})`,
  ].join("\n");
  return run([PYTHON, "-c", `${prologue}\n${script}`], { timeoutMs: 60_000 });
}

describe.skipIf(skip !== undefined)("nbdsh", () => {
  let daemon: Daemon;
  let storeDir: string;

  beforeAll(async () => {
    storeDir = tempDir("nbdsh");
    daemon = await startDaemon({ devType: "mem", size: "256MiB", storeDir });
  });

  afterAll(() => stopAndRemove(daemon, storeDir));

  test("FUA is accepted on READ, FLUSH, CACHE, BLOCK_STATUS and TRIM", async () => {
    const out = await nbdsh(
      daemon.uri,
      [
        "FUA = nbd.CMD_FLAG_FUA",
        "h.pwrite(b'\\x5a' * 8192, 0)",
        "assert h.pread(4096, 0, FUA) == b'\\x5a' * 4096",
        "h.flush(FUA)",
        "h.cache(4096, 0, FUA)",
        "seen = []",
        "h.block_status(8192, 0, lambda ctx, off, ents, err: seen.append(ctx) or 0, FUA)",
        "assert seen == [nbd.CONTEXT_BASE_ALLOCATION], seen",
        "h.trim(4096, 4096, FUA)",
        "print('fua-ok')",
      ].join("\n"),
    );
    expect(out.trim()).toBe("fua-ok");
  });

  test("the advertised maximum is 64 MiB, and a 64 MiB WRITE and READ round-trip", async () => {
    const out = await nbdsh(
      daemon.uri,
      [
        "import hashlib, os",
        "assert h.get_block_size(nbd.SIZE_MAXIMUM) == 64 * 1024 * 1024, h.get_block_size(nbd.SIZE_MAXIMUM)",
        "data = os.urandom(64 * 1024 * 1024)",
        "h.pwrite(data, 1024 * 1024)",
        "back = h.pread(len(data), 1024 * 1024)",
        "print(hashlib.sha256(back).hexdigest() == hashlib.sha256(data).hexdigest())",
      ].join("\n"),
    );
    expect(out.trim()).toBe("True");
  });
});
