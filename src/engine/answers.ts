/**
 * How a session answers its requests: the reply for each outcome (data, block status, success, an NBD error), the
 * request's metrics, and one log line per kind of problem per connection. The CommandRunner reports outcomes here;
 * the session hears of every answered request through `answered`.
 */
import { DeviceError, type Extent } from "../devices/device.ts";
import type { Logger } from "../shared/log.ts";
import type { Outcome } from "./commands.ts";
import type { DeviceMetrics } from "./metrics.ts";
import { CMD, CMD_NAMES, NBD_ERR } from "./protocol/constants.ts";
import { blockStatusReply, errorReply, readReply, simpleReply } from "./protocol/replies.ts";
import type { Request } from "./protocol/requests.ts";
import type { ReplyWriter } from "./reply-writer.ts";

export class Answers implements Outcome {
  private readonly warned = new Set<string>();

  constructor(
    private readonly out: ReplyWriter,
    private readonly metrics: DeviceMetrics,
    private readonly structuredReplies: boolean,
    private readonly log: Logger,
    private readonly peer: string,
    /** Called once per request, after its reply was queued. */
    private readonly answered: (req: Request) => void,
  ) {}

  read(req: Request, data: Uint8Array): void {
    if (data.length !== req.length) {
      this.failed(req, new Error(`device returned ${data.length} bytes for a ${req.length}-byte read`));
      return;
    }
    this.metrics.end(CMD.READ, req.length, req.started, true);
    readReply(this.out, req, data, this.structuredReplies);
    this.answered(req);
  }

  blockStatus(req: Request, extents: readonly Extent[], onlyOne: boolean): void {
    this.metrics.end(CMD.BLOCK_STATUS, req.length, req.started, true);
    blockStatusReply(this.out, req, extents, onlyOne);
    this.answered(req);
  }

  completed(req: Request, bytes: number): void {
    this.metrics.end(req.type, bytes, req.started, true);
    simpleReply(this.out, req, 0);
    this.answered(req);
  }

  /** A request that failed in the device: DeviceError picks the NBD error, anything else is EIO. */
  failed(req: Request, error: unknown): void {
    const name = CMD_NAMES[req.type] ?? `command ${req.type}`;
    if (error instanceof DeviceError) {
      this.warnOnce(`device:${error.code}:${req.type}`, `${name} failed: ${error.message}`);
      this.refuse(req, NBD_ERR[error.code], error.message);
      return;
    }
    const message = error instanceof Error ? error.message : String(error);
    this.warnOnce(`error:${req.type}:${message}`, `${name} at ${req.offset}+${req.length} failed: ${message}`);
    this.refuse(req, NBD_ERR.EIO, message);
  }

  /** Answers `req` with NBD error `error` (the request was refused, or failed). */
  refuse(req: Request, error: number, message: string): void {
    this.metrics.end(req.type, 0, req.started, false);
    // READ and BLOCK_STATUS answer in structured chunks once negotiated; other commands may use simple replies.
    const chunked = this.structuredReplies && (req.type === CMD.READ || req.type === CMD.BLOCK_STATUS);
    errorReply(this.out, req, error, chunked, message);
    this.answered(req);
  }

  /** Logs the first occurrence of each kind of problem on this connection; a misbehaving client cannot flood the log. */
  warnOnce(key: string, message: string): void {
    if (this.warned.has(key)) return;
    this.warned.add(key);
    this.log.log("warn", message, { peer: this.peer });
  }
}
