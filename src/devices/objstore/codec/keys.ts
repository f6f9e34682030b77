/**
 * The volume's AES-256 master key: where it comes from (`--objstore-aeskey`, or `<storeDir>/key.aes`) and the
 * subkeys derived from it. Errors here name where a key was looked for and what was wrong with it, never the key
 * material itself: these messages end up in logs and on the dashboard.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import type { AesMode } from "../layout.ts";

/** Bytes of the master key and of every subkey (AES-256, HMAC-SHA256). */
export const KEY_BYTES = 32;
/** Name of the key file generated in the store directory when a new encrypted volume is created without a key. */
export const KEY_FILE = "key.aes";

/** A key that cannot be found, read or parsed, or that does not fit the volume. The message never holds key bytes. */
export class KeyError extends Error {
  override readonly name = "KeyError";
}

export interface ResolveKeyOptions {
  /** `--objstore-aeskey`: `key:<hex|base64>`, `file:<path>` or `env:<VARIABLE>`; undefined when not given. */
  readonly spec?: string;
  /** The volume's encryption mode (from the flags for a new volume, from its manifest for an existing one). */
  readonly mode: AesMode;
  /** `--store-dir`, where `key.aes` is looked for and generated. */
  readonly storeDir: string;
  /** True when the volume is being created: only then may a missing key be generated. */
  readonly creating: boolean;
  /** The volume's name, for messages. */
  readonly volume?: string;
}

/**
 * The volume's 32-byte master key, or undefined for an unencrypted volume. Order: the spec when given, else an
 * existing `<storeDir>/key.aes`, else (new volume only) a freshly generated `key.aes` with mode 0600.
 * @throws KeyError when the spec is malformed, the key is missing or of the wrong length, or the key file is
 *   readable by group or others.
 */
export function resolveVolumeKey(options: ResolveKeyOptions): Uint8Array | undefined {
  const { spec, mode, storeDir, creating } = options;
  const volume = options.volume === undefined ? "the volume" : `volume "${options.volume}"`;
  if (mode === "identity") {
    if (spec !== undefined) {
      throw new KeyError(`--objstore-aeskey was given but ${volume} is not encrypted (aes mode identity): a key makes no sense without encryption`);
    }
    return undefined;
  }
  if (spec !== undefined) return keyFromSpec(spec);
  const generated = path.join(storeDir, KEY_FILE);
  if (fs.existsSync(generated)) return readKeyFile(generated);
  if (!creating) {
    throw new KeyError(
      `${volume} is encrypted (${mode}) and no key was found: without --objstore-aeskey the key is generated into ` +
        `${KEY_FILE} in the --store-dir of the machine that created the volume. Copy that file to ${generated} ` +
        `(chmod 600), or pass --objstore-aeskey file:<path>, key:<hex|base64> or env:<VARIABLE>`,
    );
  }
  return generateKeyFile(generated);
}

/** Parses `key:`, `file:` or `env:`; the spec's value never appears in an error. */
function keyFromSpec(spec: string): Uint8Array {
  const colon = spec.indexOf(":");
  const kind = colon < 0 ? "" : spec.slice(0, colon);
  const value = colon < 0 ? "" : spec.slice(colon + 1);
  switch (kind) {
    case "key":
      return parseKeyText(value, "--objstore-aeskey key");
    case "file":
      if (value === "") throw new KeyError("--objstore-aeskey file: needs a path, as in file:/etc/usbd/volume.key");
      return readKeyFile(value);
    case "env": {
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(value)) {
        throw new KeyError("--objstore-aeskey env: needs an environment variable name, as in env:USBD_AES_KEY");
      }
      const text = process.env[value];
      if (text === undefined || text === "") throw new KeyError(`--objstore-aeskey env:${value}: the environment variable ${value} is not set`);
      return parseKeyText(text.trim(), `environment variable ${value}`);
    }
    default:
      throw new KeyError("--objstore-aeskey must be key:<64 hex digits or base64 of 32 bytes>, file:<path> or env:<VARIABLE>");
  }
}

/** 64 hex digits or base64 (standard or URL-safe alphabet) of exactly 32 bytes. */
function parseKeyText(text: string, where: string): Uint8Array {
  // Exactly 32 bytes of text are the key itself, as the Go original took `key:` values (hex is 64 digits and base64
  // of 32 bytes 43 or 44 characters, so neither is ever 32 long).
  const raw = Buffer.from(text, "utf8");
  if (raw.length === KEY_BYTES) return new Uint8Array(raw);
  // Text of hex digits only is read as hex: base64 of 32 bytes always has a character outside them (its "=" pad,
  // or with the pad left off, all but certainly one of its 43 characters).
  if (/^[0-9a-fA-F]+$/.test(text)) {
    if (text.length === KEY_BYTES * 2) return new Uint8Array(Buffer.from(text, "hex"));
    throw new KeyError(`${where}: a hex key must be 64 digits (32 bytes); got ${text.length} digits`);
  }
  if (/^[A-Za-z0-9+/_-]+={0,2}$/.test(text)) {
    // Buffer's base64 decoder skips characters it does not know; the regex above has already refused them.
    const bytes = Buffer.from(text, "base64");
    if (bytes.length === KEY_BYTES) return new Uint8Array(bytes);
    throw new KeyError(`${where}: the key must be 32 bytes; this base64 holds ${bytes.length} bytes`);
  }
  throw new KeyError(`${where}: not a key: expected 64 hex digits, base64 of 32 bytes, or 32 characters taken as they are (${text.length} characters given)`);
}

/**
 * A key file holds 32 raw bytes, or hex/base64 text with an optional trailing newline. Like ssh with private keys,
 * a file others may read is refused rather than used: the key is the only thing protecting the volume's data.
 */
function readKeyFile(file: string): Uint8Array {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(file);
  } catch (error) {
    throw new KeyError(`key file ${file}: ${describeIoError(error)}`);
  }
  if (!stat.isFile()) throw new KeyError(`key file ${file}: not a regular file`);
  if ((stat.mode & 0o077) !== 0) {
    const mode = (stat.mode & 0o777).toString(8).padStart(3, "0");
    throw new KeyError(`key file ${file} is readable by other users (mode ${mode}): run chmod 600 ${file}`);
  }
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(file);
  } catch (error) {
    throw new KeyError(`key file ${file}: ${describeIoError(error)}`);
  }
  if (bytes.length === KEY_BYTES) return new Uint8Array(bytes);
  // Text: only a trailing newline (and a CR before it) is allowed around the key, as `echo` or an editor leaves it.
  const text = bytes.toString("latin1").replace(/\r?\n$/, "");
  return parseKeyText(text, `key file ${file}`);
}

/** Creates `file` exclusively with mode 0600 and 32 random bytes, durably; a concurrent creator's file wins. */
function generateKeyFile(file: string): Uint8Array {
  const key = new Uint8Array(crypto.randomBytes(KEY_BYTES));
  let fd: number;
  try {
    fd = fs.openSync(file, "wx", 0o600);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "EEXIST") return readKeyFile(file);
    throw new KeyError(`cannot create key file ${file}: ${describeIoError(error)}`);
  }
  try {
    fs.writeSync(fd, key);
    fs.fsyncSync(fd);
  } catch (error) {
    fs.closeSync(fd);
    fs.rmSync(file, { force: true });
    throw new KeyError(`cannot write key file ${file}: ${describeIoError(error)}`);
  }
  fs.closeSync(fd);
  // The key must survive a crash as surely as the volume created with it: losing it loses every object.
  syncDirectory(path.dirname(file));
  return key;
}

function syncDirectory(dir: string): void {
  try {
    const fd = fs.openSync(dir, "r");
    try {
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    // Some filesystems refuse fsync on a directory; the file itself is synced.
  }
}

function describeIoError(error: unknown): string {
  const code = (error as NodeJS.ErrnoException).code;
  if (code === "ENOENT") return "no such file";
  if (code === "EACCES" || code === "EPERM") return "permission denied";
  return code ?? (error instanceof Error ? error.message : String(error));
}

/** The subkeys of a volume, each used for one purpose only. */
export interface VolumeKeys {
  /** AES-256 key of the segment objects (GCM or CTR). */
  readonly encryption: Uint8Array;
  /** HMAC-SHA256 key of aes-ctr objects (encrypt-then-MAC). */
  readonly mac: Uint8Array;
  /** HMAC-SHA256 key of the manifest's keyCheck. */
  readonly check: Uint8Array;
}

const HKDF_SALT = "usbd-tui objstore v1";

/** Derives the subkeys from the master key with HKDF-SHA256, so no key is used by two algorithms. */
export function deriveVolumeKeys(master: Uint8Array): VolumeKeys {
  if (master.length !== KEY_BYTES) throw new KeyError(`the master key must be ${KEY_BYTES} bytes, not ${master.length}`);
  const derive = (info: string) => new Uint8Array(crypto.hkdfSync("sha256", master, HKDF_SALT, info, KEY_BYTES));
  return { encryption: derive("segment encryption"), mac: derive("segment mac"), check: derive("manifest key check") };
}
