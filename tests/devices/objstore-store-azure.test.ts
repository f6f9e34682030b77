// The azure backend against azurite on loopback (started once for this file, always with --disableTelemetry): the
// store conformance suite, then what only Azure has (SAS tokens).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { BlobServiceClient, ContainerSASPermissions, StorageSharedKeyCredential, generateBlobSASQueryParameters } from "@azure/storage-blob";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { AzureObjectStore } from "../../src/devices/objstore/store/azure.ts";
import { openObjectStore } from "../../src/devices/objstore/store/config.ts";
import { AZURITE_ACCOUNT, AZURITE_KEY, azuriteConfig, startAzurite, type AzuriteServer } from "../helpers/azurite-server.ts";
import { deadPort } from "../helpers/ports.ts";
import { bytes, failure, storeConformance } from "./store-conformance.ts";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "usbd-store-azure-"));
let server: AzuriteServer;
let deadEndpoint: string;
beforeAll(async () => {
  server = await startAzurite({ directory: path.join(dir, "azurite") });
  deadEndpoint = `http://127.0.0.1:${await deadPort()}/${AZURITE_ACCOUNT}`;
});
afterAll(async () => {
  await server.cleanup();
  fs.rmSync(dir, { recursive: true, force: true });
}, 30_000);

const WRONG_KEY = Buffer.from("not the key of this account, but the right length for one....").toString("base64");

function service(): BlobServiceClient {
  return new BlobServiceClient(server.endpoint, new StorageSharedKeyCredential(AZURITE_ACCOUNT, AZURITE_KEY));
}

storeConformance(
  {
    name: "azure on azurite",
    open: (name, options) =>
      options?.listPageSize === undefined
        ? openObjectStore("azure", azuriteConfig(server, name), { localPath: "/nonexistent" })
        : new AzureObjectStore({ account: AZURITE_ACCOUNT, key: AZURITE_KEY, endpoint: server.endpoint, container: name, listPageSize: options.listPageSize }),
    exists: (name) => service().getContainerClient(name).exists(),
    conditionalCreate: "atomic",
    fileAndDirectoryKeys: true,
    wrongCredentials: (name) => new AzureObjectStore({ account: AZURITE_ACCOUNT, key: WRONG_KEY, endpoint: server.endpoint, container: name }),
    unreachable: () => new AzureObjectStore({ account: AZURITE_ACCOUNT, key: AZURITE_KEY, endpoint: deadEndpoint, container: "contract" }),
    missingBucketIsError: true,
  },
  [WRONG_KEY, AZURITE_KEY],
);

describe("azure store: SAS tokens", () => {
  function sas(container: string, permissions: string): string {
    return generateBlobSASQueryParameters(
      { containerName: container, permissions: ContainerSASPermissions.parse(permissions), expiresOn: new Date(Date.now() + 3600_000) },
      new StorageSharedKeyCredential(AZURITE_ACCOUNT, AZURITE_KEY),
    ).toString();
  }

  test("a container SAS with read/write/delete/list works; prepare needs no right to create containers", async () => {
    await service().getContainerClient("sas-ok").createIfNotExists();
    const token = sas("sas-ok", "racwdl");
    const store = openObjectStore("azure", { sas: `?${token}`, endpoint: server.endpoint, container: "sas-ok" }, { localPath: "/x" });
    await store.prepare();
    await store.put("a/b", bytes(100));
    expect((await store.get("a/b", { offset: 10, length: 5 }))?.body).toEqual(bytes(100).subarray(10, 15));
    expect((await store.createIfAbsent("a/b", bytes(3))).outcome).toBe("exists");
    expect(store.description).not.toContain("sig=");
    store.close();
  });

  test("a read-only SAS: writes fail unauthorised, and the signature never shows in the message", async () => {
    await service().getContainerClient("sas-ro").createIfNotExists();
    const token = sas("sas-ro", "rl");
    const signature = new URLSearchParams(token).get("sig")!;
    const store = openObjectStore("azure", { sas: token, endpoint: server.endpoint, container: "sas-ro" }, { localPath: "/x" });
    const error = await failure(store.put("a/b", bytes(3)));
    expect(error.kind).toBe("unauthorised");
    expect(error.message).not.toContain(signature);
    expect(error.message).not.toContain(encodeURIComponent(signature));
    expect(error.message).toContain("sas");
  });
});
