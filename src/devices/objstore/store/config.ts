/**
 * `--objstore-kind` and the parsed `--objstore-cfg` into an ObjectStore: which keys each kind reads, the S3 presets,
 * and the defaults. Every mistake is an ObjectStoreConfigError that names the key at fault; no message or
 * description ever holds a secret.
 */
import fs from "node:fs";
import { OBJSTORE_KINDS } from "../layout.ts";
import { AzureObjectStore } from "./azure.ts";
import { LocalObjectStore } from "./local.ts";
import { S3ObjectStore, type S3ObjectStoreOptions } from "./s3.ts";
import { ObjectStoreConfigError, snakeOf, type Field, type ObjectStoreConfig } from "./settings.ts";
import { SftpObjectStore } from "./sftp.ts";
import { SwiftObjectStore, type SwiftAuth } from "./swift.ts";
import type { ObjectStore } from "./types.ts";

export { ObjectStoreConfigError, describeObjectStoreConfig, parseObjectStoreConfig, type ObjectStoreConfig } from "./settings.ts";

/** The bucket or container when the config names none. */
const DEFAULT_NAME = "usbd";

/** The settings each kind reads; any other key given is a mistake worth reporting. */
const S3_FIELDS: readonly Field[] = ["accessKeyId", "secretKey", "sessionToken", "endpoint", "region", "bucket", "pathStyle"];
const USED: Readonly<Record<string, readonly Field[]>> = {
  s3: S3_FIELDS,
  b2: S3_FIELDS,
  google: S3_FIELDS,
  oracle: [...S3_FIELDS, "namespace"],
  local: ["path"],
  azure: ["account", "key", "sas", "container", "endpoint"],
  swift: ["authUrl", "user", "key", "password", "project", "domain", "region", "container", "storageUrl"],
  sftp: ["host", "port", "user", "privateKeyFile", "passphrase", "password", "path", "hostFingerprint"],
};

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
    bucket: config.bucket ?? DEFAULT_NAME,
    endpoint,
    region: region ?? "us-east-1",
    // S3-compatible services mostly want the bucket in the path; AWS prefers (and for new regions needs) the host.
    pathStyle: config.pathStyle ?? endpoint !== undefined,
    credentials,
    label: kind,
  };
}

function required<F extends Field>(kind: string, config: ObjectStoreConfig, field: F, example: string): NonNullable<ObjectStoreConfig[F]> {
  const value = config[field];
  if (value === undefined) throw new ObjectStoreConfigError(`--objstore-kind=${kind} needs "${snakeOf(field)}" in --objstore-cfg (${example})`);
  return value as NonNullable<ObjectStoreConfig[F]>;
}

function azureStore(config: ObjectStoreConfig): AzureObjectStore {
  if ((config.key === undefined) === (config.sas === undefined)) {
    throw new ObjectStoreConfigError(`--objstore-kind=azure needs exactly one of "key" (the account key) and "sas" (a SAS token) in --objstore-cfg`);
  }
  if (config.key !== undefined) required("azure", config, "account", "the storage account name");
  if (config.endpoint === undefined) required("azure", config, "account", `the storage account name, or "endpoint"`);
  return new AzureObjectStore({ account: config.account, key: config.key, sas: config.sas, container: config.container ?? DEFAULT_NAME, endpoint: config.endpoint });
}

function swiftStore(config: ObjectStoreConfig): SwiftObjectStore {
  const url = required("swift", config, "authUrl", "e.g. https://keystone.example.com:5000/v3, or http://HOST:8080/auth/v1.0 for tempauth");
  const user = required("swift", config, "user", "the Swift user; for auth v1 written account:user");
  let auth: SwiftAuth;
  if (config.key !== undefined) {
    if (config.password !== undefined || config.project !== undefined || config.domain !== undefined) {
      throw new ObjectStoreConfigError(`--objstore-kind=swift: "key" is auth v1's; "password", "project" and "domain" are Keystone v3's: give one set`);
    }
    auth = { version: 1, url, user, key: config.key };
  } else {
    const password = required("swift", config, "password", `the Keystone v3 password, or "key" for auth v1`);
    const project = required("swift", config, "project", "the Keystone project (tenant) name");
    auth = { version: 3, url, user, password, project, domain: config.domain ?? "Default", region: config.region };
  }
  return new SwiftObjectStore({ auth, container: config.container ?? DEFAULT_NAME, storageUrl: config.storageUrl });
}

function sftpStore(config: ObjectStoreConfig): SftpObjectStore {
  const host = required("sftp", config, "host", "the SSH server's name or address");
  const user = required("sftp", config, "user", "the SSH user");
  const path = required("sftp", config, "path", "the remote directory the objects go in, e.g. /srv/usbd");
  const hostFingerprint = required(
    "sftp",
    config,
    "hostFingerprint",
    `the server's host key as SHA256:..., from "ssh-keyscan -p PORT HOST | ssh-keygen -lf -" run where you trust the network; an unknown host is refused`,
  );
  if ((config.privateKeyFile === undefined) === (config.password === undefined)) {
    throw new ObjectStoreConfigError(`--objstore-kind=sftp needs exactly one of "private_key_file" and "password" in --objstore-cfg`);
  }
  if (config.passphrase !== undefined && config.privateKeyFile === undefined) {
    throw new ObjectStoreConfigError(`--objstore-kind=sftp: "passphrase" is for an encrypted "private_key_file"`);
  }
  let privateKey: Buffer | undefined;
  if (config.privateKeyFile !== undefined) {
    try {
      privateKey = fs.readFileSync(config.privateKeyFile);
    } catch (e) {
      const code = (e as { code?: unknown }).code;
      throw new ObjectStoreConfigError(`cannot read "private_key_file" ${config.privateKeyFile} of --objstore-cfg: ${typeof code === "string" ? code : String(e)}`);
    }
  }
  return new SftpObjectStore({
    host,
    port: config.port ?? 22,
    user,
    path,
    hostFingerprint,
    privateKey,
    privateKeyFile: config.privateKeyFile,
    passphrase: config.passphrase,
    password: config.password,
  });
}

/**
 * The store of `--objstore-kind=<kind>` with `config`; `defaults.localPath` is the local kind's directory when the
 * config has no `path`. Throws ObjectStoreConfigError for unknown kinds and missing or stray settings.
 */
export function openObjectStore(kind: string, config: ObjectStoreConfig, defaults: { readonly localPath: string }): ObjectStore {
  const used = USED[kind];
  if (used === undefined) throw new ObjectStoreConfigError(`unknown --objstore-kind "${kind}"; the kinds are: ${OBJSTORE_KINDS.join(", ")}`);
  for (const field of Object.keys(config) as Field[]) {
    if (config[field] !== undefined && !used.includes(field)) {
      throw new ObjectStoreConfigError(`"${snakeOf(field)}" in --objstore-cfg is not used by --objstore-kind=${kind}; remove it`);
    }
  }
  switch (kind) {
    case "local":
      return new LocalObjectStore(config.path ?? defaults.localPath);
    case "azure":
      return azureStore(config);
    case "swift":
      return swiftStore(config);
    case "sftp":
      return sftpStore(config);
    default:
      return new S3ObjectStore(s3Options(kind, config));
  }
}
