/**
 * A long-running child process for the suites: its stdout and stderr collected as they arrive, a wait for a
 * readiness condition that fails with both streams when the process dies or takes too long, and a stop by signal
 * that reports how it ended.
 */
import type { Subprocess } from "bun";

export interface Watched {
  readonly proc: Subprocess<"ignore", "pipe", "pipe">;
  readonly command: readonly string[];
  /** Everything written to stdout / stderr so far. */
  stdout(): string;
  stderr(): string;
  /** The exit code once the process has exited, else null. */
  exitCode(): number | null;
  /** Sends `signal` and waits for the exit (SIGKILL after `timeoutMs`); resolves with the exit code once output is drained. */
  stop(signal: NodeJS.Signals, timeoutMs: number): Promise<number>;
  /** SIGKILL if still running. Never throws. */
  kill(): void;
}

async function drain(stream: ReadableStream<Uint8Array>, onText: (s: string) => void): Promise<void> {
  const decoder = new TextDecoder();
  for await (const chunk of stream) onText(decoder.decode(chunk, { stream: true }));
}

export function watch(command: readonly string[], options: { readonly cwd?: string; readonly env?: Record<string, string> } = {}): Watched {
  const proc = Bun.spawn([...command], { stdin: "ignore", stdout: "pipe", stderr: "pipe", cwd: options.cwd, env: { ...process.env, ...options.env } });
  let out = "";
  let err = "";
  const drained = Promise.all([drain(proc.stdout, (s) => (out += s)), drain(proc.stderr, (s) => (err += s))]);
  let code: number | null = null;
  void proc.exited.then((c) => (code = c));
  return {
    proc,
    command,
    stdout: () => out,
    stderr: () => err,
    exitCode: () => code,
    async stop(signal, timeoutMs) {
      if (code === null) proc.kill(signal);
      const timer = setTimeout(() => proc.kill("SIGKILL"), timeoutMs);
      const exit = await proc.exited;
      clearTimeout(timer);
      await drained;
      return exit;
    },
    kill() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill("SIGKILL");
    },
  };
}

/**
 * Polls `probe` until it returns a value; throws (with the command and both streams) if the process exits first
 * or `timeoutMs` passes.
 */
export async function waitFor<T>(what: string, w: Watched, probe: () => T | undefined, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined) return value;
    const code = w.exitCode();
    const reason = code !== null ? `exited with ${code} before ${what}` : Date.now() > deadline ? `no ${what} after ${timeoutMs} ms` : undefined;
    if (reason !== undefined) {
      throw new Error(`${reason}\ncommand: ${w.command.join(" ")}\n--- stderr ---\n${w.stderr().trim()}\n--- stdout ---\n${w.stdout().trim()}`);
    }
    await Bun.sleep(25);
  }
}
