// Guest program: the vsock driver (drivers/virtio-vsock/driver), unchanged, on the
// virtio modern PCI transport and hugepage DMA memory. It serves an echo on a vsock
// port and exits 0 after a given number of connections have closed.
//
//   node /app/main.js [--port=1234] [--connections=1] [--interrupts=uio|poll]
//
// Named options, because the kernel hands init any parameter it does not know (e.g.
// "nokaslr") as an argument too, so positions are not reliable.
//
// Prints `vsock-echo: listening on cid <cid> port <port>` when ready, and
// `vsock-echo-result: {json}` before it exits.
import { boot } from '../../kernel/guest/boot.js';
import { UioIntxInterrupts } from '../../kernel/guest/interrupts.js';
import { VsockDriver } from '../../drivers/virtio-vsock/driver/driver.js';

const VIRTIO_ID_VSOCK = 19;

boot(
  'vsock-echo',
  async (ctx) => {
    const opt = (name: string, fallback: number): number => {
      const a = ctx.args.find((x) => x.startsWith(`--${name}=`));
      const v = a === undefined ? fallback : Number(a.slice(name.length + 3));
      if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`--${name}: not a number: ${a}`);
      return v;
    };
    const port = opt('port', 1234);
    const wanted = opt('connections', 1);
    const mode = ctx.args.find((x) => x.startsWith('--interrupts='))?.slice('--interrupts='.length) ?? 'uio';
    if (mode !== 'uio' && mode !== 'poll') throw new RangeError(`--interrupts: uio or poll, not ${mode}`);
    const t = ctx.openVirtioDevice(VIRTIO_ID_VSOCK, { interrupts: mode });
    const driver = await VsockDriver.start(t);
    let echoed = 0;
    let closed = 0;
    await new Promise<void>((resolve, reject) => {
      const server = driver.createServer((sock) => {
        ctx.log(`connection from cid ${sock.remoteCid} port ${sock.remotePort}`);
        sock.on('data', (d: Buffer) => {
          echoed += d.length;
          sock.write(d);
        });
        sock.on('end', () => sock.end());
        sock.on('error', (e: Error) => ctx.log(`socket error: ${e.message}`));
        sock.on('close', () => {
          if (++closed === wanted) {
            server.close();
            resolve();
          }
        });
      });
      server.on('error', reject);
      server.listen(port, () => ctx.log(`listening on cid ${driver.localCid} port ${port}`));
    });
    process.stdout.write(`vsock-echo-result: ${JSON.stringify({ connections: closed, echoedBytes: echoed, cid: driver.localCid, interrupts: t.interruptCount, uioEvents: t.interrupts instanceof UioIntxInterrupts ? t.interrupts.events : 0, uioSpurious: t.interrupts instanceof UioIntxInterrupts ? t.interrupts.spurious : 0 })}\n`);
    driver.close();
    return 0;
  },
  { dmaPages: 16 },
);
