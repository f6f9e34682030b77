/**
 * An ObjectStore wrapper that counts the requests and bytes going through it, so the objstore bench
 * (bench/objstore.ts) reports what the store saw (PUTs, bytes uploaded, GETs) rather than what the device says.
 */
import type { ByteRange, CreateResult, GetResult, ObjectInfo, ObjectStore } from "../../src/devices/objstore/store/types.ts";
import type { CountedStore } from "./objstore-sustained.ts";

/** Counts every request; `snapshot()` is what objstore-sustained.ts reads as a CountedStore. */
export class CountingStore implements CountedStore {
  puts = 0;
  putBytes = 0;
  gets = 0;
  getBytes = 0;
  heads = 0;
  deletes = 0;
  lists = 0;
  constructor(private readonly inner: ObjectStore) {}
  get description(): string {
    return this.inner.description;
  }
  prepare(): Promise<void> {
    return this.inner.prepare();
  }
  get putDigest(): "md5" | undefined {
    return this.inner.putDigest;
  }
  async put(key: string, body: Uint8Array, md5?: Uint8Array): Promise<{ readonly etag: string }> {
    this.puts++;
    this.putBytes += body.length;
    return this.inner.put(key, body, md5);
  }
  async createIfAbsent(key: string, body: Uint8Array): Promise<CreateResult> {
    this.puts++;
    this.putBytes += body.length;
    return this.inner.createIfAbsent(key, body);
  }
  async get(key: string, range?: ByteRange): Promise<GetResult | undefined> {
    this.gets++;
    const r = await this.inner.get(key, range);
    if (r) this.getBytes += r.body.length;
    return r;
  }
  head(key: string): Promise<ObjectInfo | undefined> {
    this.heads++;
    return this.inner.head(key);
  }
  delete(key: string): Promise<void> {
    this.deletes++;
    return this.inner.delete(key);
  }
  list(prefix: string): AsyncIterable<ObjectInfo> {
    this.lists++;
    return this.inner.list(prefix);
  }
  close(): void {
    this.inner.close();
  }
  snapshot() {
    return { puts: this.puts, putBytes: this.putBytes, gets: this.gets, getBytes: this.getBytes, deletes: this.deletes };
  }
}
