/**
 * Holds a connection's input while its memory account is over budget: the transport stops reading (so the client
 * meets TCP or Unix-socket backpressure instead of the server buffering for it), bytes that had already arrived are
 * kept in arrival order, and once the request that did not fit fits, the connection is told to go on.
 */
import type { BudgetAccount } from "./memory-budget.ts";
import type { Transport } from "./reply-writer.ts";

/** How often a closed gate checks whether its peer is still there. */
const PEER_CHECK_MS = 1000;

export class InputGate {
  /** Input is held: nothing more is parsed until `reopen`. */
  closed = false;
  /** Bytes received and not parsed yet, oldest first. */
  private held: Buffer[] = [];
  /** Their total, which the connection counts as memory it holds. */
  heldBytes = 0;
  /** What the request at the head of the held bytes will cost once admitted. */
  private cost = 0;
  private readonly retry = (): void => this.onRoom();
  /** While closed: looks for a peer that left, which a paused socket does not report. */
  private watch: ReturnType<typeof setInterval> | undefined;

  constructor(
    private readonly account: BudgetAccount,
    private readonly transport: Transport,
    /**
     * What the connection holds for requests already admitted (their charges and unsent replies). Input held here
     * does not count against the next request: it is that request's own bytes, and counting it would keep a request
     * larger than the connection's share from ever being admitted.
     */
    private readonly admitted: () => number,
    /** Called when the held request fits the budget again (never while the connection is parsing). */
    private readonly onRoom: () => void,
    /** Called when the peer turns out to have left while the gate was closed. */
    private readonly onGone: () => void,
  ) {}

  /** Whether a request costing `bytes` may be taken now. */
  admits(bytes: number): boolean {
    return this.account.budget.allows(this.admitted(), bytes);
  }

  /**
   * Stops taking input until a request costing `cost` fits: `rest` (the unparsed end of the current chunk) is kept,
   * copied when `reused` says its memory will be overwritten (a receive buffer the connection reuses).
   */
  close(rest: Uint8Array, reused: boolean, cost: number): void {
    this.closed = true;
    this.cost = cost;
    this.keep(rest, reused);
    this.transport.pause?.();
    this.account.budget.wait(this.retry);
    const peerGone = this.transport.peerGone;
    if (peerGone !== undefined && this.watch === undefined) {
      this.watch = setInterval(() => {
        if (peerGone()) this.onGone();
      }, PEER_CHECK_MS);
    }
  }

  /** Keeps a chunk that arrived while closed (the transport may deliver what it had read before pausing). */
  keep(chunk: Uint8Array, reused = false): void {
    if (chunk.length === 0) return;
    const copy = reused ? Buffer.from(chunk) : Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    this.held.push(copy);
    this.heldBytes += copy.length;
  }

  /** The held request now fits. */
  fits(): boolean {
    return this.admits(this.cost);
  }

  /** Opens the gate and hands back what was held, for the connection to parse in order. */
  reopen(): Buffer[] {
    this.closed = false;
    this.stopWatching();
    this.account.budget.cancel(this.retry);
    const held = this.held;
    this.held = [];
    this.heldBytes = 0;
    return held;
  }

  /** After parsing what `reopen` returned: reading resumes unless a request closed the gate again. */
  resumeReading(): void {
    if (!this.closed) this.transport.resume?.();
  }

  /** The connection ended: drop what was held and stop waiting. */
  dispose(): void {
    this.stopWatching();
    this.account.budget.cancel(this.retry);
    this.held = [];
    this.heldBytes = 0;
  }

  private stopWatching(): void {
    clearInterval(this.watch);
    this.watch = undefined;
  }
}
