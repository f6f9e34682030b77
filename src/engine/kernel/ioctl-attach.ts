/**
 * Attaching through the NBD ioctls, for kernels without the netlink family (or when asked): configure a free
 * /dev/nbdN, hand it the sockets, then NBD_DO_IT, which blocks until disconnect and so runs in a worker.
 */
import { LibcError, O_RDWR, closeFd, ioctl, openPath } from "../../ffi/libc.ts";
import { BaseAttachment, kernelBlockSize, kernelServerFlags } from "./attachment.ts";
import { runBlocking } from "./blocking.ts";
import { NBD_IOCTL } from "./constants.ts";
import { type KernelServeOptions, openKernelSockets } from "./kernel-sockets.ts";
import { KernelUsageError } from "./module.ts";
import { nbdInUse, nbdIndexes, nbdPath } from "./sysfs.ts";

/** How long NBD_DO_IT may take to bring the device up before the attach counts as failed. */
const START_TIMEOUT_MS = 10_000;

export class IoctlAttachment extends BaseAttachment {
  readonly interface = "ioctl";

  private constructor(
    index: number,
    serve: KernelServeOptions,
    connections: number,
    private readonly fd: number,
    private readonly running: Promise<number>,
  ) {
    super({ index, device: serve.device, log: serve.log, stateFile: undefined }, connections, false);
    running.then(
      () => this.lost("was disconnected outside usbd-tui"),
      (error: unknown) => this.lost(`stopped: NBD_DO_IT failed (${error instanceof Error ? error.message : String(error)})`),
    );
  }

  /** Attaches to `index`, or to the first free device that accepts us. */
  static async attach(request: { readonly index?: number; readonly connections: number; readonly timeoutSeconds: number }, serve: KernelServeOptions): Promise<IoctlAttachment> {
    const candidates = request.index !== undefined ? [request.index] : nbdIndexes().filter((i) => !nbdInUse(i));
    if (candidates.length === 0) {
      throw new KernelUsageError(
        `every /dev/nbdN is in use (${nbdIndexes().length} devices) and the ioctl interface cannot create more; detach one, or use --nbd-interface=netlink, which creates new devices`,
      );
    }
    let lastError: unknown;
    for (const index of candidates) {
      try {
        return await IoctlAttachment.attachTo(index, request, serve);
      } catch (error) {
        // Another process took this device between our check and our SET_SOCK: try the next one.
        if (request.index === undefined && error instanceof LibcError && error.code === "EBUSY") {
          lastError = error;
          continue;
        }
        throw error;
      }
    }
    throw new KernelUsageError(`every free /dev/nbdN was taken by another process while attaching (${String(lastError)})`);
  }

  private static async attachTo(index: number, request: { readonly connections: number; readonly timeoutSeconds: number }, serve: KernelServeOptions): Promise<IoctlAttachment> {
    const fd = openPath(nbdPath(index), O_RDWR);
    const sockets = await openKernelSockets(request.connections, serve);
    let running: Promise<number>;
    try {
      const blockSize = kernelBlockSize(serve.device);
      ioctl(fd, NBD_IOCTL.SET_BLKSIZE, blockSize);
      ioctl(fd, NBD_IOCTL.SET_SIZE_BLOCKS, serve.device.size / blockSize);
      ioctl(fd, NBD_IOCTL.CLEAR_SOCK, 0);
      for (const kernelFd of sockets.kernelFds) ioctl(fd, NBD_IOCTL.SET_SOCK, kernelFd);
      ioctl(fd, NBD_IOCTL.SET_FLAGS, kernelServerFlags(serve.device, request.connections));
      ioctl(fd, NBD_IOCTL.SET_TIMEOUT, request.timeoutSeconds);
      running = runBlocking({ op: "ioctl", fd, request: NBD_IOCTL.DO_IT, arg: 0 });
      await started(index, running);
    } catch (error) {
      for (const c of sockets.connections) c.terminate();
      try {
        ioctl(fd, NBD_IOCTL.CLEAR_SOCK, 0);
      } catch {
        // The device was never ours to clear.
      }
      closeFd(fd);
      throw error;
    } finally {
      sockets.releaseKernelEnds();
    }
    const attachment = new IoctlAttachment(index, serve, request.connections, fd, running);
    attachment.adopt(sockets.connections);
    return attachment;
  }

  connected(): boolean {
    return nbdInUse(this.index);
  }

  protected async disconnect(): Promise<void> {
    // NBD_DISCONNECT writes NBD_CMD_DISC to our sockets before it returns: not on this thread.
    await runBlocking({ op: "ioctl", fd: this.fd, request: NBD_IOCTL.DISCONNECT, arg: 0 });
    await this.running.catch(() => 0);
    ioctl(this.fd, NBD_IOCTL.CLEAR_SOCK, 0);
    closeFd(this.fd);
  }

  protected connectionLost(): void {
    // The kernel carries on over the remaining connections (or NBD_DO_IT returns when none is left).
    this.base.log.log("warn", `${this.path}: a connection closed; the ioctl interface cannot replace it`);
  }
}

/** Resolves once the kernel shows the device as attached; rejects if NBD_DO_IT fails first or it takes too long. */
async function started(index: number, running: Promise<number>): Promise<void> {
  let failed: unknown;
  let done = false;
  running.then(
    () => (done = true),
    (error: unknown) => {
      failed = error;
      done = true;
    },
  );
  const deadline = performance.now() + START_TIMEOUT_MS;
  while (!nbdInUse(index)) {
    if (failed !== undefined) throw failed;
    if (done) throw new Error(`NBD_DO_IT on /dev/nbd${index} returned at once: the kernel did not start the device`);
    if (performance.now() > deadline) throw new Error(`/dev/nbd${index} did not come up within ${START_TIMEOUT_MS / 1000} s of NBD_DO_IT`);
    await Bun.sleep(10);
  }
}
