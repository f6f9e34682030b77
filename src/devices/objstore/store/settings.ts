/**
 * `--objstore-cfg` (inline JSON or a JSON file, snake_case keys) into an ObjectStoreConfig. Every mistake is an
 * ObjectStoreConfigError that names the key at fault; no message or description ever holds a secret. Which keys a
 * kind uses, and what it makes of them, is config.ts's business.
 */
import fs from "node:fs";

/** Where a volume's objects go and how to get in, as parsed from `--objstore-cfg` (every kind's keys). */
export interface ObjectStoreConfig {
  // s3 and its presets
  readonly accessKeyId?: string;
  readonly secretKey?: string;
  readonly sessionToken?: string;
  /** Base URL of an S3-compatible service, or of the Azure blob service (http or https). */
  readonly endpoint?: string;
  readonly region?: string;
  readonly bucket?: string;
  /** Bucket in the URL path rather than the host name; default true with an endpoint, false for AWS. */
  readonly pathStyle?: boolean;
  /** Oracle Cloud's Object Storage namespace (part of its endpoint). */
  readonly namespace?: string;
  /** The directory of `--objstore-kind=local`, or the remote directory of sftp. */
  readonly path?: string;
  // azure
  readonly account?: string;
  /** The Azure account key, or the Swift auth v1 key. */
  readonly key?: string;
  readonly sas?: string;
  /** Azure or Swift container. */
  readonly container?: string;
  // swift
  readonly authUrl?: string;
  /** Swift user (v1: `account:user`), or the SSH user of sftp. */
  readonly user?: string;
  /** Keystone v3 password, or the SSH password of sftp. */
  readonly password?: string;
  readonly project?: string;
  readonly domain?: string;
  /** A Swift storage URL to use instead of the one the auth service names. */
  readonly storageUrl?: string;
  // sftp
  readonly host?: string;
  readonly port?: number;
  readonly privateKeyFile?: string;
  /** The passphrase of an encrypted private key file. */
  readonly passphrase?: string;
  /** The server's host key, as OpenSSH prints it: `SHA256:<base64>`. */
  readonly hostFingerprint?: string;
}

/** A bad `--objstore-cfg` or `--objstore-kind`, or credentials the store refused: the user's to fix (exit 2). */
export class ObjectStoreConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ObjectStoreConfigError";
  }
}

export type Field = keyof ObjectStoreConfig;

interface KeySpec {
  readonly field: Field;
  readonly type: "string" | "boolean" | "number";
  readonly secret?: true;
}

/** The keys `--objstore-cfg` accepts, what they become, and which ones are never shown. */
export const KEYS: Readonly<Record<string, KeySpec>> = {
  access_key_id: { field: "accessKeyId", type: "string" },
  secret_key: { field: "secretKey", type: "string", secret: true },
  session_token: { field: "sessionToken", type: "string", secret: true },
  endpoint: { field: "endpoint", type: "string" },
  region: { field: "region", type: "string" },
  bucket: { field: "bucket", type: "string" },
  path_style: { field: "pathStyle", type: "boolean" },
  path: { field: "path", type: "string" },
  namespace: { field: "namespace", type: "string" },
  account: { field: "account", type: "string" },
  key: { field: "key", type: "string", secret: true },
  sas: { field: "sas", type: "string", secret: true },
  container: { field: "container", type: "string" },
  auth_url: { field: "authUrl", type: "string" },
  user: { field: "user", type: "string" },
  password: { field: "password", type: "string", secret: true },
  project: { field: "project", type: "string" },
  domain: { field: "domain", type: "string" },
  storage_url: { field: "storageUrl", type: "string" },
  host: { field: "host", type: "string" },
  port: { field: "port", type: "number" },
  private_key_file: { field: "privateKeyFile", type: "string" },
  passphrase: { field: "passphrase", type: "string", secret: true },
  host_fingerprint: { field: "hostFingerprint", type: "string" },
};

/** Names people write from other tools' configurations (and the SDKs' own names), pointed at ours. */
const ALIASES: Readonly<Record<string, string>> = {
  secret_access_key: "secret_key",
  aws_access_key_id: "access_key_id",
  aws_secret_access_key: "secret_key",
  accessKeyId: "access_key_id",
  secretKey: "secret_key",
  secretAccessKey: "secret_key",
  sessionToken: "session_token",
  pathStyle: "path_style",
  force_path_style: "path_style",
  forcePathStyle: "path_style",
  account_name: "account",
  accountName: "account",
  account_key: "key",
  accountKey: "key",
  sas_token: "sas",
  sasToken: "sas",
  authUrl: "auth_url",
  auth: "auth_url",
  username: "user",
  project_name: "project",
  tenant: "project",
  tenant_name: "project",
  user_domain_name: "domain",
  project_domain_name: "domain",
  storageUrl: "storage_url",
  preauthurl: "storage_url",
  privateKey: "private_key_file",
  private_key: "private_key_file",
  identity_file: "private_key_file",
  fingerprint: "host_fingerprint",
  hostFingerprint: "host_fingerprint",
};

export function snakeOf(field: Field): string {
  return Object.keys(KEYS).find((k) => KEYS[k]!.field === field) ?? field;
}

/**
 * Parses `--objstore-cfg`: inline JSON when it starts with `{`, else the path of a JSON file; absent: no settings.
 * Throws ObjectStoreConfigError for unreadable files, invalid JSON, unknown keys and wrong types.
 */
export function parseObjectStoreConfig(raw: string | undefined): ObjectStoreConfig {
  if (raw === undefined || raw.trim() === "") return {};
  const inline = raw.trimStart().startsWith("{");
  const source = inline ? "--objstore-cfg (inline JSON)" : `--objstore-cfg file ${raw}`;
  let textValue = raw;
  if (!inline) {
    try {
      textValue = fs.readFileSync(raw, "utf8");
    } catch (e) {
      const code = (e as { code?: unknown }).code;
      throw new ObjectStoreConfigError(`cannot read --objstore-cfg file ${raw}: ${typeof code === "string" ? code : String(e)}`);
    }
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(textValue);
  } catch (e) {
    // The parser quotes the offending token, which may be part of a secret: keep its words, drop its quotes.
    const detail = (e instanceof Error ? e.message : String(e)).replace(/"[^"]*"|'[^']*'/g, "(...)");
    throw new ObjectStoreConfigError(`${source} is not valid JSON (${detail})`);
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new ObjectStoreConfigError(`${source} must be a JSON object like {"bucket": "usbd", "endpoint": "https://..."}`);
  }
  const config: Record<string, string | boolean | number> = {};
  for (const [name, value] of Object.entries(parsed)) {
    const key = KEYS[name];
    if (key === undefined) {
      const alias = ALIASES[name];
      const hint = alias === undefined ? "" : ` (did you mean "${alias}"?)`;
      throw new ObjectStoreConfigError(`unknown key "${name}" in ${source}${hint}; the keys are: ${Object.keys(KEYS).join(", ")}`);
    }
    if (typeof value !== key.type) {
      const got = value === null ? "null" : Array.isArray(value) ? "an array" : `a ${typeof value}`;
      throw new ObjectStoreConfigError(`"${name}" in ${source} must be a ${key.type}, not ${got}`);
    }
    if (value === "") throw new ObjectStoreConfigError(`"${name}" in ${source} is empty; leave it out instead`);
    config[key.field] = value as string | boolean | number;
  }
  const result = config as ObjectStoreConfig;
  checkConfig(result, source);
  return result;
}

/** Checks a URL setting: http(s), and no user:password in it (it would be shown wherever the URL is). */
function checkUrl(name: string, value: string | undefined, source: string, credentialKeys: string): void {
  if (value === undefined) return;
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new ObjectStoreConfigError(`"${name}" in ${source} is not a URL; write it like https://store.example.com`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") throw new ObjectStoreConfigError(`"${name}" in ${source} must be an http:// or https:// URL`);
  if (url.username !== "" || url.password !== "") {
    throw new ObjectStoreConfigError(`"${name}" in ${source} must not hold credentials; use ${credentialKeys}`);
  }
  if (url.search !== "") throw new ObjectStoreConfigError(`"${name}" in ${source} must not have a query string${name === "endpoint" ? ' (a SAS token goes in "sas")' : ""}`);
}

function checkConfig(config: ObjectStoreConfig, source: string): void {
  if ((config.accessKeyId === undefined) !== (config.secretKey === undefined)) {
    throw new ObjectStoreConfigError(`${source} has only one of access_key_id and secret_key: give both, or neither to use the AWS_* environment or ~/.aws`);
  }
  if (config.sessionToken !== undefined && config.accessKeyId === undefined) {
    throw new ObjectStoreConfigError(`${source} has session_token without access_key_id and secret_key`);
  }
  for (const name of ["bucket", "container"] as const) {
    if (config[name]?.includes("/") === true) throw new ObjectStoreConfigError(`"${name}" in ${source} must be a name, without "/"`);
  }
  checkUrl("endpoint", config.endpoint, source, "access_key_id and secret_key (or key, sas)");
  checkUrl("auth_url", config.authUrl, source, "user and key (or password)");
  checkUrl("storage_url", config.storageUrl, source, "user and key (or password)");
  if (config.port !== undefined && !(Number.isInteger(config.port) && config.port >= 1 && config.port <= 65535)) {
    throw new ObjectStoreConfigError(`"port" in ${source} must be a whole number from 1 to 65535`);
  }
  if (config.hostFingerprint !== undefined && !/^SHA256:[A-Za-z0-9+/]{43}=?$/.test(config.hostFingerprint)) {
    throw new ObjectStoreConfigError(
      `"host_fingerprint" in ${source} must be OpenSSH's SHA256 form, like SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s (ssh-keyscan HOST | ssh-keygen -lf -)`,
    );
  }
}

/** One line about `config` for logs and errors; secrets appear as `<REDACTED>`. */
export function describeObjectStoreConfig(config: ObjectStoreConfig): string {
  const parts: string[] = [];
  for (const [name, key] of Object.entries(KEYS)) {
    const value = config[key.field];
    if (value === undefined) continue;
    parts.push(`${name}=${key.secret ? "<REDACTED>" : typeof value === "string" ? JSON.stringify(value) : String(value)}`);
  }
  return parts.join(" ");
}
