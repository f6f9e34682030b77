/**
 * `sudo usbd-tui` as users meet it: the dashboard in a real terminal (tmux) attaching a device to the kernel. The
 * panel names the /dev/nbdN it got; with ext4 mounted on it, `d` is refused naming the mount point and `t` runs
 * fstrim and reports the bytes; once unmounted, `q` then `y` detaches and exits 0. Runs in the test VM
 * (scripts/test-kernel.sh tests/vm/dashboard.vm.ts); the screens go to .artifacts/dashboard-kernel-*.txt.
 */
import { afterAll, expect, setDefaultTimeout, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { panelOf } from "../ui/screen.ts";
import { tmuxScreen } from "../ui/tmux.ts";
import { CLI, attached, mountPoint, removeDir, requireVm, sh, storeDirectory } from "./helpers.ts";

requireVm();
setDefaultTimeout(240_000);

const ROOT = resolve(import.meta.dir, "../..");
const dir = storeDirectory();
const { tmux, screen, keep, screenWhere: waitForScreen } = tmuxScreen(join(dir, "tmux.sock"), "usbd", "dashboard-kernel", 300);
const screenWhere = (what: string, predicate: (text: string) => boolean, timeoutMs = 60_000) => waitForScreen(what, predicate, timeoutMs);

afterAll(async () => {
  await tmux("kill-server");
  removeDir(dir);
});

test("the dashboard on the kernel path: attach, refuse to detach while mounted, fstrim, quit in order", async () => {
  const exitFile = join(dir, "exit");
  const command = `cd ${ROOT} && env -u CI ${CLI.join(" ")} --store-size 256MiB; echo "exit=$?" > ${exitFile}; sleep 120`;
  expect((await tmux("new-session", "-d", "-s", "usbd", "-x", "160", "-y", "40", command)).exitCode).toBe(0);

  const attachedScreen = await screenWhere("the device attached", (t) => /usbd · mem · 256 MiB · serving · \/dev\/nbd\d+/.test(t));
  keep("attached", attachedScreen);
  const path = /\/dev\/nbd\d+/.exec(panelOf(attachedScreen, "usbd"))![0];
  expect(attachedScreen.split("\n")[0]).toContain("kernel NBD (1 attached)");
  expect(attachedScreen).toMatch(new RegExp(`usbd\\s+attached as ${path}`));

  const mnt = mountPoint("dashboard");
  await sh(`mkfs.ext4 -q -E nodiscard ${path} && mount ${path} ${mnt}`);
  await sh(`dd if=/dev/urandom of=${mnt}/big bs=1M count=32 conv=fsync status=none && rm ${mnt}/big && sync`);

  await tmux("send-keys", "-t", "usbd", "d");
  await screenWhere("the detach question", (t) => t.includes('Detach "usbd"'));
  await tmux("send-keys", "-t", "usbd", "y");
  const refused = await screenWhere("the refusal", (t) => t.includes(`not detaching ${path}`) && t.includes(mnt));
  keep("refused", refused);
  expect(panelOf(refused, "usbd")).toContain("serving");

  await tmux("send-keys", "-t", "usbd", "t");
  await screenWhere("the trim question", (t) => t.includes('Trim "usbd"'));
  await tmux("send-keys", "-t", "usbd", "y");
  const trimmed = await screenWhere("the fstrim result", (t) => new RegExp(`usbd\\s+trimmed [\\d.]+ [KMG]iB \\(fstrim ${mnt}\\)`).test(t));
  keep("trimmed", trimmed);

  await sh(`umount ${mnt}`);
  await tmux("send-keys", "-t", "usbd", "q");
  await screenWhere("the quit question", (t) => t.includes("Quit? 1 device will be flushed, disconnected and closed."));
  await tmux("send-keys", "-t", "usbd", "y");
  const deadline = Date.now() + 60_000;
  while (!existsSync(exitFile) && Date.now() < deadline) await Bun.sleep(200);
  keep("after-exit", await screen());
  expect(readFileSync(exitFile, "utf8").trim()).toBe("exit=0");
  expect(attached(Number(path.slice("/dev/nbd".length)))).toBe(false);
});
