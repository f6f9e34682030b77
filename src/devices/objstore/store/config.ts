/**
 * `--objstore-cfg` (inline JSON or a JSON file, snake_case keys) and `--objstore-kind` into an ObjectStore. Every
 * mistake is an ObjectStoreConfigError that names the key at fault; no message or description ever holds a secret.
 */
import fs from "node:fs";
import { OBJSTORE_KINDS } from "../layout.ts";
import { LocalObjectStore } from "./local.ts";
import { S3ObjectStore, type S3ObjectStoreOptions } from "./s3.ts";
import type { ObjectStore } from "./types.ts";

/** Where a volume's objects go and how to get in, as parsed from `--objstore-cfg`. */
export interface ObjectStoreConfig {
  readonly accessKeyId?: string;
  readonly secretKey?: string;
  readonly sessionToken?: string;
  /** Base URL of an S3-compatible service (http or https). */
  readonly endpoint?: string;
  readonly region?: string;
  readonly bucket: string;
  /** Bucket in the URL path rather than the host name; default true with an endpoint, false for AWS. */
  readonly pathStyle?: boolean;
  /** The directory of `--objstore-kind=local`. */
  readonly path?: string;
  /** Oracle Cloud's Object Storage namespace (part of its endpoint). */
  readonly namespace?: string;
}

/** A bad `--objstore-cfg` or `--objstore-kind`: the user's to fix, so the CLI exits with code 2. */
export class ObjectStoreConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ObjectStoreConfigError";
  }
}

type Field = keyof ObjectStoreConfig;

/** The keys `--objstore-cfg` accepts, what they become, and which ones are never shown. */
const KEYS: Readonly<Record<string, { readonly field: Field; readonly type: "string" | "boolean"; readonly secret?: true }>> = {
  access_key_id: { field: "accessKeyId", type: "string" },
  secret_key: { field: "secretKey", type: "string", secret: true },
  session_token: { field: "sessionToken", type: "string", secret: true },
  endpoint: { field: "endpoint", type: "string" },
  region: { field: "region", type: "string" },
  bucket: { field: "bucket", type: "string" },
  path_style: { field: "pathStyle", type: "boolean" },
  path: { field: "path", type: "string" },
  namespace: { field: "namespace", type: "string" },
};

/** Names people write from other tools' configurations, pointed at ours. */
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
};

const DEFAULT_BUCKET = "usbd";

/** The settings each kind reads; any other key given is a mistake worth reporting. */
const S3_FIELDS: readonly Field[] = ["accessKeyId", "secretKey", "sessionToken", "endpoint", "region", "bucket", "pathStyle"];
const USED: Readonly<Record<string, readonly Field[]>> = {
  s3: S3_FIELDS,
  b2: S3_FIELDS,
  google: S3_FIELDS,
  oracle: [...S3_FIELDS, "namespace"],
  local: ["path", "bucket"],
};

const UNSUPPORTED = new Set(["azure", "swift", "sftp"]);

function snakeOf(field: Field): string {
  return Object.keys(KEYS).find((k) => KEYS[k]!.field === field) ?? field;
}

/**
 * Parses `--objstore-cfg`: inline JSON when it starts with `{`, else the path of a JSON file; absent: defaults only.
 * Throws ObjectStoreConfigError for unreadable files, invalid JSON, unknown keys and wrong types.
 */
export function parseObjectStoreConfig(raw: string | undefined): ObjectStoreConfig {
  if (raw === undefined || raw.trim() === "") return { bucket: DEFAULT_BUCKET };
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
  const config: Record<string, string | boolean> = {};
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
    config[key.field] = value as string | boolean;
  }
  const result = { bucket: DEFAULT_BUCKET, ...config } as ObjectStoreConfig;
  checkConfig(result, source);
  return result;
}

function checkConfig(config: ObjectStoreConfig, source: string): void {
  if ((config.accessKeyId === undefined) !== (config.secretKey === undefined)) {
    throw new ObjectStoreConfigError(`${source} has only one of access_key_id and secret_key: give both, or neither to use the AWS_* environment or ~/.aws`);
  }
  if (config.sessionToken !== undefined && config.accessKeyId === undefined) {
    throw new ObjectStoreConfigError(`${source} has session_token without access_key_id and secret_key`);
  }
  if (config.bucket.includes("/")) throw new ObjectStoreConfigError(`"bucket" in ${source} must be a bucket name, without "/"`);
  if (config.endpoint !== undefined) {
    let url: URL;
    try {
      url = new URL(config.endpoint);
    } catch {
      throw new ObjectStoreConfigError(`"endpoint" in ${source} is not a URL; write it like https://s3.example.com`);
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") throw new ObjectStoreConfigError(`"endpoint" in ${source} must be an http:// or https:// URL`);
    // A user:password in the URL would be shown wherever the endpoint is; the keys have their own fields.
    if (url.username !== "" || url.password !== "") {
      throw new ObjectStoreConfigError(`"endpoint" in ${source} must not hold credentials; use access_key_id and secret_key`);
    }
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

function need(kind: string, config: ObjectStoreConfig, field: "region" | "namespace", example: string): string {
  const value = config[field];
  if (value === undefined) throw new ObjectStoreConfigError(`--objstore-kind=${kind} needs "${field}" in --objstore-cfg (${example})`);
  return value;
}

/** Whether `endpoint` is AWS's own (where instance and container roles exist), not another S3 service. */
function isAwsEndpoint(endpoint: string | undefined): boolean {
  if (endpoint === undefined) return true;
  const host = new URL(endpoint).hostname;
  return host === "amazonaws.com" || host.endsWith(".amazonaws.com") || host.endsWith(".amazonaws.com.cn");
}

/**
 * The keys from the config, else from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY. Only AWS itself gets the SDK's
 * whole default chain (~/.aws, SSO, container and instance roles): for any other endpoint that chain ends at the
 * EC2 metadata address, which took 4 s to fail here and is traffic off the machine, so missing keys fail at once.
 */
function s3Credentials(kind: string, config: ObjectStoreConfig, endpoint: string | undefined): S3ObjectStoreOptions["credentials"] {
  if (config.accessKeyId !== undefined && config.secretKey !== undefined) {
    return { accessKeyId: config.accessKeyId, secretAccessKey: config.secretKey, sessionToken: config.sessionToken };
  }
  const id = process.env.AWS_ACCESS_KEY_ID;
  const secret = process.env.AWS_SECRET_ACCESS_KEY;
  if (id !== undefined && id !== "" && secret !== undefined && secret !== "") {
    const token = process.env.AWS_SESSION_TOKEN;
    return { accessKeyId: id, secretAccessKey: secret, sessionToken: token === "" ? undefined : token };
  }
  if (isAwsEndpoint(endpoint)) return undefined;
  throw new ObjectStoreConfigError(
    `--objstore-kind=${kind} with endpoint ${endpoint} needs "access_key_id" and "secret_key" in --objstore-cfg ` +
      "(or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment); none were given",
  );
}

/** Endpoint, region and addressing style of the S3-compatible kinds; an endpoint in the config beats a preset's. */
function s3Options(kind: string, config: ObjectStoreConfig): S3ObjectStoreOptions {
  let endpoint = config.endpoint;
  let region = config.region;
  switch (kind) {
    case "b2":
      region = need(kind, config, "region", "e.g. us-west-004, as in the bucket's endpoint s3.<region>.backblazeb2.com");
      endpoint ??= `https://s3.${region}.backblazeb2.com`;
      break;
    case "google":
      // Google's interoperability samples sign with region "auto"; GCS does not check it against the bucket.
      region ??= "auto";
      endpoint ??= "https://storage.googleapis.com";
      break;
    case "oracle":
      region = need(kind, config, "region", "e.g. us-ashburn-1");
      if (endpoint === undefined) {
        const namespace = need(kind, config, "namespace", "the tenancy's Object Storage namespace");
        endpoint = `https://${namespace}.compat.objectstorage.${region}.oraclecloud.com`;
      }
      break;
  }
  const credentials = s3Credentials(kind, config, endpoint);
  return {
    bucket: config.bucket,
    endpoint,
    region: region ?? "us-east-1",
    // S3-compatible services mostly want the bucket in the path; AWS prefers (and for new regions needs) the host.
    pathStyle: config.pathStyle ?? endpoint !== undefined,
    credentials,
    label: kind,
  };
}

/**
 * The store of `--objstore-kind=<kind>` with `config`; `defaults.localPath` is the local kind's directory when the
 * config has no `path`. Throws ObjectStoreConfigError for unknown or unsupported kinds and missing or stray settings.
 */
export function openObjectStore(kind: string, config: ObjectStoreConfig, defaults: { readonly localPath: string }): ObjectStore {
  if (UNSUPPORTED.has(kind)) {
    throw new ObjectStoreConfigError(`--objstore-kind=${kind} is not yet supported; use s3 (or an S3-compatible gateway) or local`);
  }
  const used = USED[kind];
  if (used === undefined) throw new ObjectStoreConfigError(`unknown --objstore-kind "${kind}"; the kinds are: ${OBJSTORE_KINDS.join(", ")}`);
  for (const field of Object.keys(config) as Field[]) {
    if (config[field] !== undefined && !used.includes(field)) {
      throw new ObjectStoreConfigError(`"${snakeOf(field)}" in --objstore-cfg is not used by --objstore-kind=${kind}; remove it`);
    }
  }
  if (kind === "local") return new LocalObjectStore(config.path ?? defaults.localPath);
  return new S3ObjectStore(s3Options(kind, config));
}
