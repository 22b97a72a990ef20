// SiteFiles that lend file bytes in buffers they own, as the virtio-fs driver's DMA
// variant does: shared by the webserver-over-vsock tests (Duplex and raw paths).
import type { NodeSiteFiles } from '../../appliance/webserver/files/node-site-files.js';
import type { LoanedBytes, SiteFileHandle, SiteFiles } from '../../appliance/webserver/files/site-files.js';

/**
 * The shape of the virtio-fs driver's DMA variant: file bytes returned in buffers the
 * file system owns (here: DMA buffers of the vsock driver, filled from node:fs, as a
 * FUSE_READ would fill them), lent until release().
 */
export class LendingSiteFiles implements SiteFiles {
  outstanding = 0;
  lent = 0;
  private readonly idle: Buffer[] = [];
  constructor(
    private readonly inner: NodeSiteFiles,
    private readonly alloc: (n: number) => Buffer,
  ) {}
  stat(path: string) {
    return this.inner.stat(path);
  }
  async open(path: string): Promise<SiteFileHandle> {
    const h = await this.inner.open(path);
    const self = this;
    return {
      read: (into, off, len, pos) => h.read(into, off, len, pos),
      close: () => h.close(),
      async readLoaned(position: number, length: number): Promise<LoanedBytes> {
        const buf = self.idle.pop() ?? self.alloc(64 * 1024);
        const n = await h.read(buf, 0, Math.min(length, buf.length), position);
        self.outstanding++;
        self.lent++;
        let released = false;
        return {
          bytes: buf.subarray(0, n),
          release() {
            if (released) throw new Error('released twice');
            released = true;
            self.outstanding--;
            self.idle.push(buf);
          },
        };
      },
    };
  }
}
