/** Sets of log object sequence numbers as catalog bytes (what a checkpoint or snapshot refers to). */

/** Name of the catalog's snapshot row that holds the newest checkpoint (snapshot names cannot start with "@"). */
export const HEAD_ROW = "@head";
/** The checkpoint before it, kept (with what it refers to) until the next one: a bucket copied while a checkpoint is
 * written, object by object, still holds a complete one. */
export const PREVIOUS_ROW = "@previous";

export function packRefs(refs: Iterable<number>): Uint8Array {
  const list = [...refs];
  const out = new Uint8Array(list.length * 8);
  const view = new DataView(out.buffer);
  list.forEach((seq, i) => view.setFloat64(i * 8, seq, true));
  return out;
}

export function unpackRefs(bytes: Uint8Array): Set<number> {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const out = new Set<number>();
  for (let at = 0; at + 8 <= bytes.length; at += 8) out.add(view.getFloat64(at, true));
  return out;
}

