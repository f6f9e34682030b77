/** Waiting for a dashboard frame in ink-testing-library, and measuring one the way a terminal does. */
import stringWidth from "string-width";

/** Polls the last frame until `predicate` holds; fails with the frame it last saw. */
export async function frameWhere(lastFrame: () => string | undefined, predicate: (frame: string) => boolean, what: string, timeoutMs = 8000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const frame = lastFrame() ?? "";
    if (predicate(frame)) return frame;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; last frame:\n${frame}`);
    await Bun.sleep(50);
  }
}

/** The frame's rows and the widest row in terminal columns (a wide character counts two). */
export function frameSize(frame: string): { rows: number; columns: number } {
  const lines = frame.replace(/\n+$/, "").split("\n");
  return { rows: lines.length, columns: Math.max(0, ...lines.map((l) => stringWidth(l))) };
}
