// Guest program: two devices at once, the way the webserver appliance needs them: the
// vsock driver and the virtio-fs driver, both on the virtio modern PCI transport, one
// hugepage DMA arena, two uio interrupt sources. A tiny protocol on vsock port 1234:
// the host sends "GET <name>\n"; the guest answers "<size>\n" and the file's bytes,
// read by FUSE_READ into DMA chunks that go out as vsock transmit descriptors as they
// are (no copy in the guest), then ends the stream. "GET" of a missing file answers
// "-1\n". Exits 0 after --connections=N connections closed.
import { once } from 'node:events';
import { boot } from '../../kernel/guest/boot.js';
import { VirtioFsDriver } from '../../drivers/virtio-fs/driver/index.js';
import { VsockDriver } from '../../drivers/virtio-vsock/driver/driver.js';
import type { VsockSocket } from '../../drivers/virtio-vsock/driver/socket.js';

const VIRTIO_ID_VSOCK = 19;
const VIRTIO_ID_FS = 26;

boot(
  'file-server-probe',
  async (ctx) => {
    const arg = ctx.args.find((x) => x.startsWith('--connections='));
    const wanted = arg === undefined ? 1 : Number(arg.slice('--connections='.length));
    const vsockTransport = ctx.openVirtioDevice(VIRTIO_ID_VSOCK);
    const fsTransport = ctx.openVirtioDevice(VIRTIO_ID_FS);
    const fs = await VirtioFsDriver.start(fsTransport);
    const vsock = await VsockDriver.start(vsockTransport);
    let served = 0;
    let bytesSent = 0;

    const serve = async (sock: VsockSocket): Promise<void> => {
      // The request line (the host may half-close right after it: allowHalfOpen).
      const request = await new Promise<string>((resolve) => {
        let text = '';
        const onData = (chunk: Buffer): void => {
          text += chunk.toString('latin1');
          if (text.includes('\n')) done();
        };
        const done = (): void => {
          sock.off('data', onData);
          sock.off('end', done);
          resolve(text);
        };
        sock.on('data', onData);
        sock.on('end', done);
      });
      const m = /^GET ([A-Za-z0-9._-]+)\n/.exec(request);
      if (!m) {
        sock.end('-1\n');
        return;
      }
      let file;
      try {
        file = await fs.readFileDma(`/${m[1]}`);
      } catch {
        sock.end('-1\n');
        return;
      }
      sock.write(`${file.size}\n`);
      // The DMA chunks go out as they are; they are released when the last write completed.
      for (let i = 0; i < file.chunks.length; i++) {
        const c = file.chunks[i]!;
        bytesSent += c.length;
        const last = i === file.chunks.length - 1;
        if (!sock.write(c, last ? () => file.release() : undefined)) await once(sock, 'drain');
      }
      if (file.chunks.length === 0) file.release();
      sock.end();
    };

    await new Promise<void>((resolve, reject) => {
      const server = vsock.createServer({ allowHalfOpen: true }, (sock) => {
        sock.on('error', (e: Error) => ctx.log(`socket error: ${e.message}`));
        sock.on('close', () => {
          if (++served === wanted) {
            server.close();
            resolve();
          }
        });
        serve(sock).catch((e: unknown) => {
          ctx.log(`serve failed: ${(e as Error).message}`);
          sock.destroy();
        });
      });
      server.on('error', reject);
      server.listen(1234, () => ctx.log(`serving tag ${fs.tag} on cid ${vsock.localCid} port 1234`));
    });
    process.stdout.write(
      `file-server-probe-result: ${JSON.stringify({ served, bytesSent, vsockInterrupts: vsockTransport.interruptCount, fsInterrupts: fsTransport.interruptCount, fsStats: fs.stats, vsockStats: vsock.stats })}\n`,
    );
    vsock.close();
    await fs.close();
    return 0;
  },
  { dmaPages: 24 },
);
