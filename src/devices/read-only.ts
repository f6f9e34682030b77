/** The one refusal every kind opened with `readOnly` (--read-only) gives a write-like call. */
import { DeviceError } from "./device.ts";

/** Throws EPERM when the device was opened read-only; the engine refuses such requests first, this guards direct callers. */
export function refuseIfReadOnly(readOnly: boolean, kind: string): void {
  if (readOnly) throw new DeviceError("EPERM", `${kind} device: opened read-only (--read-only); writes, trims and zeroes are refused`);
}
