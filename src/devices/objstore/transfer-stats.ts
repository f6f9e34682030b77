/** Counters of the traffic between the cache and the store, and of its failures, for the device's gauges. */

export class TransferStats {
  uploads = 0;
  /** Bytes stored: log objects and checkpoints (what the write amplification counts). */
  uploadedBytes = 0;
  /** Of those, log objects, and the data they carry (their ratio is the compression ratio). */
  logBytes = 0;
  uploadedPlainBytes = 0;
  downloads = 0;
  downloadedBytes = 0;
  deletes = 0;
  errors = 0;
  lastError: string | undefined;
  /** When the store last failed (ms since the epoch), and whether it has worked since. */
  lastErrorAt = 0;
  failing = false;
  uploadsInFlight = 0;
  /** The current upload round: how many segments it has to upload and how many are done. */
  roundTotal = 0;
  roundDone = 0;
  /** When the store last held everything that was dirty (ms since the epoch; 0: not yet). */
  lastCleanAt = 0;
  private rateAt = Date.now();
  private rateUploaded = 0;
  private rateDownloaded = 0;
  private uploadRate = 0;
  private downloadRate = 0;

  failed(message: string): void {
    this.errors++;
    this.lastError = message;
    this.lastErrorAt = Date.now();
    this.failing = true;
  }

  succeeded(): void {
    this.failing = false;
  }

  /** Bytes per second up and down since the previous call (at most once a second, so a fast poller sees steady rates). */
  rates(): { readonly up: number; readonly down: number } {
    const now = Date.now();
    const elapsed = (now - this.rateAt) / 1000;
    if (elapsed >= 1) {
      this.uploadRate = (this.uploadedBytes - this.rateUploaded) / elapsed;
      this.downloadRate = (this.downloadedBytes - this.rateDownloaded) / elapsed;
      this.rateAt = now;
      this.rateUploaded = this.uploadedBytes;
      this.rateDownloaded = this.downloadedBytes;
    }
    return { up: this.uploadRate, down: this.downloadRate };
  }
}
