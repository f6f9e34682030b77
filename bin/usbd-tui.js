#!/usr/bin/env node
// The `usbd-tui` command as npm installs it (npm install -g, npx, bunx). usbd-tui runs on Bun: under Bun this file
// simply runs the CLI; under Node.js it finds the Bun that came with the package (the npm `bun` package, or its
// platform package when the postinstall that links it did not run) and runs the CLI with it, passing signals on and
// exiting with its status. Plain JavaScript, so that any Node.js can read it and say what is missing.
import { spawn } from "node:child_process";
import { closeSync, openSync, readSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const entry = path.join(here, "usbd-tui.ts");

/** Whether `file` is an executable native program (the bun package's bin/bun.exe is a text placeholder until its postinstall ran). */
function isNativeExecutable(file) {
  try {
    const stat = statSync(file);
    if (!stat.isFile() || (stat.mode & 0o111) === 0 || stat.size < 1024 * 1024) return false;
    const fd = openSync(file, "r");
    const magic = Buffer.alloc(4);
    readSync(fd, magic, 0, 4, 0);
    closeSync(fd);
    return magic.equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46])) || magic.readUInt32BE(0) === 0xcffaedfe || magic.readUInt32BE(0) === 0xcafebabe;
  } catch {
    return false;
  }
}

/** The Bun to run the CLI with: $USBD_TUI_BUN, the package's own, or one on the PATH. */
function findBun() {
  if (process.env.USBD_TUI_BUN) return process.env.USBD_TUI_BUN;
  const require = createRequire(import.meta.url);
  const arch = process.arch === "arm64" ? "aarch64" : process.arch;
  const os = process.platform;
  const candidates = [
    ["bun", "bin/bun.exe"],
    [`@oven/bun-${os}-${arch}`, "bin/bun"],
    [`@oven/bun-${os}-${arch}-baseline`, "bin/bun"],
    [`@oven/bun-${os}-${arch}-musl`, "bin/bun"],
    [`@oven/bun-${os}-${arch}-musl-baseline`, "bin/bun"],
  ];
  for (const [pkg, file] of candidates) {
    try {
      const found = path.join(path.dirname(require.resolve(`${pkg}/package.json`)), file);
      if (isNativeExecutable(found)) return found;
    } catch {
      // Not installed (an optional platform package for another machine).
    }
  }
  for (const dir of (process.env.PATH ?? "").split(path.delimiter)) {
    if (dir !== "" && isNativeExecutable(path.join(dir, "bun"))) return path.join(dir, "bun");
  }
  return undefined;
}

if (typeof globalThis.Bun !== "undefined") {
  await import(entry);
} else {
  const bun = findBun();
  if (bun === undefined) {
    process.stderr.write(
      "usbd-tui: needs the Bun runtime (https://bun.sh) and found none: neither the one npm installs with usbd-tui " +
        "(did the install run with --ignore-scripts or --omit=optional?) nor a bun on the PATH. Install it with " +
        "`npm install -g bun` (or `curl -fsSL https://bun.sh/install | bash`), or run `bun " + entry + "` yourself\n",
    );
    process.exit(1);
  }
  const child = spawn(bun, [entry, ...process.argv.slice(2)], { stdio: "inherit" });
  // A terminal's Ctrl-C reaches the whole foreground process group, bun included: passing SIGINT on as well would
  // make it a second one (which stops the daemon without waiting). Other signals, and SIGINT from kill(1) when no
  // terminal is involved, only reach this process and are passed on.
  const forward = (signal) => () => {
    if (signal === "SIGINT" && process.stdin.isTTY) return;
    child.kill(signal);
  };
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGQUIT"]) process.on(signal, forward(signal));
  child.on("error", (error) => {
    process.stderr.write(`usbd-tui: cannot run ${bun}: ${error.message}\n`);
    process.exit(1);
  });
  child.on("exit", (code, signal) => {
    if (signal !== null) {
      process.removeAllListeners(signal);
      process.kill(process.pid, signal);
    }
    process.exit(code ?? 1);
  });
}
