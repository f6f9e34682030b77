/** `fstrim -v` on a mounted file system of a kernel device, and how many bytes it reports trimmed. */

/** What `fstrim -v` reports: "/mnt/x: 1.2 GiB (1234567 bytes) trimmed" (also "... trimmed on /dev/nbd0"). */
export function parseFstrimBytes(output: string): number | undefined {
  const match = /\((\d+) bytes\) trimmed/.exec(output);
  return match === null ? undefined : Number(match[1]);
}

/**
 * Runs `fstrim -v` on a mount point and returns the bytes it trimmed. Asynchronous on purpose: the file system's
 * TRIM requests come back to this process's sessions, so waiting synchronously would deadlock.
 */
export async function fstrim(mountPoint: string): Promise<number> {
  let proc: ReturnType<typeof Bun.spawn<"ignore", "pipe", "pipe">>;
  try {
    proc = Bun.spawn(["fstrim", "-v", mountPoint], { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  } catch (error) {
    throw new Error(`cannot run fstrim on ${mountPoint} (${error instanceof Error ? error.message : String(error)}); install util-linux`);
  }
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  if (code !== 0) throw new Error(`fstrim ${mountPoint} failed (exit ${code}): ${stderr.trim() || stdout.trim() || "no output"}`);
  const bytes = parseFstrimBytes(stdout);
  if (bytes === undefined) throw new Error(`fstrim ${mountPoint}: cannot read the trimmed byte count from "${stdout.trim()}"`);
  return bytes;
}
