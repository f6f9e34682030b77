/**
 * One segment of the volume as the cache sees it: where its bytes are cached, whether they hold writes the store
 * lacks, and which remote object they came from. Dirtiness is two counters, not a flag, so that a write landing
 * while the segment uploads keeps it dirty: the upload only cleans the sequence number it snapshotted.
 */
import type { SegmentRow } from "./catalog.ts";

export class Segment {
  /** The cache slot holding the segment's bytes, or undefined when they are not cached. */
  slot: number | undefined;
  /** Bumped by every change to the cached bytes. */
  writeSeq = 0;
  /** The writeSeq of the last snapshot that reached the store. */
  uploadedSeq = 0;
  /** Generation of the newest object uploaded or downloaded for the segment (0: none seen). */
  generation = 0;
  /** ETag of the remote object, undefined when the store has none for this segment. */
  etag: string | undefined;
  /** Requests using the cached bytes right now; a pinned segment is never evicted. */
  pins = 0;
  /** Set while the segment is being fetched into the cache; others wait for it. */
  loading: Promise<void> | undefined;
  /** Set while a snapshot of the segment is being uploaded. */
  upload: Promise<void> | undefined;

  constructor(
    readonly id: number,
    /** Bytes of the volume in this segment: objectSize, less for the last one. */
    readonly length: number,
  ) {}

  get dirty(): boolean {
    return this.writeSeq !== this.uploadedSeq;
  }

  get cached(): boolean {
    return this.slot !== undefined;
  }

  /** The store has an object for this segment. */
  get remote(): boolean {
    return this.etag !== undefined;
  }

  /** Neither cached nor stored: reads as zeros and costs nothing. */
  get empty(): boolean {
    return this.slot === undefined && this.etag === undefined;
  }

  /** Busy segments cannot be evicted. */
  get busy(): boolean {
    return this.pins > 0 || this.loading !== undefined || this.upload !== undefined;
  }

  row(): SegmentRow {
    return { id: this.id, slot: this.slot ?? null, dirty: this.dirty, generation: this.generation, etag: this.etag ?? null };
  }

  static fromRow(row: SegmentRow, length: number): Segment {
    const s = new Segment(row.id, length);
    s.slot = row.slot ?? undefined;
    s.generation = row.generation;
    s.etag = row.etag ?? undefined;
    if (row.dirty) s.writeSeq = 1;
    return s;
  }
}
