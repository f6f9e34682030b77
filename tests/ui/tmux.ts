/**
 * Driving a program in tmux for the dashboard's terminal tests (on the host and in the test VM): send keys, read
 * the screen as a user sees it, and keep screens under .artifacts/ as the tests' artifacts.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { type RunResult, runResult } from "../clients/helpers.ts";

const ARTIFACTS = resolve(import.meta.dir, "../../.artifacts");

export interface TmuxScreen {
  /** Runs a tmux command against this test's own tmux server. */
  tmux(...args: string[]): Promise<RunResult>;
  /** The session's screen as plain text. */
  screen(): Promise<string>;
  /** Saves `text` as .artifacts/<prefix>-<name>.txt. */
  keep(name: string, text: string): void;
  /** Polls the screen until `predicate` holds; fails with the screen it last saw (also kept, as "failure"). */
  screenWhere(what: string, predicate: (text: string) => boolean, timeoutMs: number): Promise<string>;
}

/** `socket`: the tmux server's socket (private to the test); `session`: the session whose screen is read. */
export function tmuxScreen(socket: string, session: string, artifactPrefix: string, pollMs: number): TmuxScreen {
  const tmux = (...args: string[]) => runResult(["tmux", "-S", socket, ...args], { timeoutMs: 10_000 });
  const screen = async () => (await tmux("capture-pane", "-p", "-t", session)).stdout;
  const keep = (name: string, text: string) => {
    mkdirSync(ARTIFACTS, { recursive: true });
    writeFileSync(join(ARTIFACTS, `${artifactPrefix}-${name}.txt`), text);
  };
  const screenWhere = async (what: string, predicate: (text: string) => boolean, timeoutMs: number) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const text = await screen();
      if (predicate(text)) return text;
      if (Date.now() > deadline) {
        keep("failure", text);
        throw new Error(`timed out waiting for ${what}; the screen:\n${text}`);
      }
      await Bun.sleep(pollMs);
    }
  };
  return { tmux, screen, keep, screenWhere };
}
