/**
 * The Host's event stream: every event numbered, logged once, kept in a bounded ring (so a viewer that attaches
 * later, or reconnects, sees what it missed) and sent to subscribers. Also the loggers the Host hands to the engine
 * and to devices: every line reaches the daemon's log with the device named, and warnings and errors also become
 * events, so the dashboard and `ctl events` show them without matching any log text.
 */
import type { LogLevel, Logger } from "../shared/log.ts";
import { type HostEvent, type HostEventKind, eventLevel } from "./host-types.ts";

/** Events kept for late viewers. */
const RECENT_EVENTS = 500;

export class HostEvents {
  private readonly recent: HostEvent[] = [];
  private seq = 0;
  private readonly listeners = new Set<(event: HostEvent) => void>();

  constructor(private readonly log: Logger) {}

  /** Logs an event of `device` ("" for the daemon) and sends it to every subscriber. */
  emit(device: string, kind: HostEventKind, message: string): HostEvent {
    this.log.log(eventLevel(kind), message, device === "" ? { event: kind } : { device, event: kind });
    return this.publish(device, kind, eventLevel(kind), message);
  }

  /** The kept events after `afterSeq` (all kept ones by default), oldest first. */
  since(afterSeq = 0): HostEvent[] {
    return this.recent.filter((e) => e.seq > afterSeq);
  }

  subscribe(listener: (event: HostEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * A logger whose lines go to the daemon's log with `device` added (when known), and whose warnings and errors
   * are also events of that device. `deviceOf` names the device of a line that carries none (a connection's peer).
   */
  logger(device: string | undefined, deviceOf: (fields: Readonly<Record<string, unknown>>) => string | undefined = () => undefined): Logger {
    return {
      log: (level: LogLevel, message: string, fields?: Readonly<Record<string, unknown>>) => {
        const named = device ?? (typeof fields?.device === "string" ? fields.device : fields === undefined ? undefined : deviceOf(fields));
        this.log.log(level, message, named === undefined || fields?.device !== undefined ? fields : { device: named, ...fields });
        if (level !== "warn" && level !== "error") return;
        const cause = typeof fields?.error === "string" ? `: ${fields.error}` : "";
        const peer = typeof fields?.peer === "string" ? ` (${fields.peer})` : "";
        this.publish(named ?? "", level === "error" ? "error" : "warning", level, `${message}${cause}${peer}`);
      },
    };
  }

  private publish(device: string, kind: HostEventKind, level: HostEvent["level"], message: string): HostEvent {
    const event: HostEvent = { seq: ++this.seq, time: Date.now(), device, kind, level, message };
    this.recent.push(event);
    if (this.recent.length > RECENT_EVENTS) this.recent.splice(0, this.recent.length - RECENT_EVENTS);
    for (const listener of this.listeners) listener(event);
    return event;
  }
}
