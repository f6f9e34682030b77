/** Group names for --socket-group: a number is a gid as it is, a name is looked up in the group database. */
import { readFileSync } from "node:fs";

/** The gid of `group` (a name or a number), or undefined when no such group exists. */
export function groupId(group: string, groupFile = "/etc/group"): number | undefined {
  if (/^\d+$/.test(group)) return Number(group);
  let text = "";
  try {
    text = readFileSync(groupFile, "utf8");
  } catch {
    // No group database: only numeric groups can be named.
  }
  for (const line of text.split("\n")) {
    const [name, , gid] = line.split(":");
    if (name === group && gid !== undefined && /^\d+$/.test(gid)) return Number(gid);
  }
  return undefined;
}
