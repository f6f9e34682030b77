/**
 * Store error messages come from SDKs and servers, which may quote a request URL (with a SAS signature), a header or
 * a body: everything a backend puts in a message passes through here first, so no secret reaches a log line, --json
 * or the dashboard, and a multi-line server answer stays one line.
 */

const REDACTED = "<REDACTED>";

/** `text` on one line, with every `secret` (also URL-encoded) and every URL signature or token parameter hidden. */
export function redact(text: string, secrets: readonly (string | undefined)[]): string {
  let out = text.replace(/\s*\n\s*/g, " ").trim();
  for (const secret of secrets) {
    if (secret === undefined || secret.length < 4) continue;
    for (const form of new Set([secret, encodeURIComponent(secret), secret.replace(/^\?/, "")])) {
      if (form.length >= 4) out = out.split(form).join(REDACTED);
    }
  }
  // A SAS token's signature, or a token in a query, quoted back by a server or an SDK.
  return out.replace(/\b(sig|signature|token|password|X-Auth-Key|X-Auth-Token)=[^&\s'"]+/gi, `$1=${REDACTED}`);
}
