// Guest program: the vsock driver (drivers/virtio-vsock/driver) on the virtio modern PCI
// transport, one driver, the transmit modes chosen per server (socket option txMode):
//
//   port 1234  echo, txMode 'two-copy'
//   port 1235  echo, txMode 'single-copy'
//   port 1236  echo, txMode 'zero-copy' (each received chunk is copied into a DMA
//              buffer from allocBuffer, which then goes out by descriptor)
//   port 1299  control: the host writes "exit\n"; the program prints its result and exits 0
//
// and, at start, connects out to the host (CID 2) port --connect-port=P (the daemon's
// `<uds-path>_P` listener), sends --connect-bytes=N pattern bytes, reads the host's
// echo to its end and checks it equals what it sent.
//
//   node /app/main.js [--connect-port=5000] [--connect-bytes=1048576] [--interrupts=uio|poll]
//
// The echo servers respect back-pressure (pause while write() says so, resume on
// 'drain'), so the peer's credit, not guest memory, bounds a 64 MiB transfer.
//
// Prints `vsock-matrix: listening on cid <cid> ports 1234,1235,1236,1299`,
// `vsock-matrix: outgoing {json}` after the outgoing exchange, and
// `vsock-matrix-result: {json}` before it exits.
import { createHash } from 'node:crypto';
import { boot } from '../../kernel/guest/boot.js';
import { VsockDriver } from '../../drivers/virtio-vsock/driver/driver.js';
import type { VsockSocket } from '../../drivers/virtio-vsock/driver/socket.js';
import type { TxMode } from '../../drivers/virtio-vsock/driver/connection.js';
import { pattern } from './pattern.js';

const VIRTIO_ID_VSOCK = 19;
const HOST_CID = 2;
const CONTROL_PORT = 1299;
const MODES: ReadonlyArray<[number, TxMode]> = [
  [1234, 'two-copy'],
  [1235, 'single-copy'],
  [1236, 'zero-copy'],
];

interface ModeResult {
  port: number;
  mode: TxMode;
  connections: number;
  echoedBytes: number;
  errors: number;
}

boot(
  'vsock-matrix',
  async (ctx) => {
    const opt = (name: string, fallback: number): number => {
      const a = ctx.args.find((x) => x.startsWith(`--${name}=`));
      const v = a === undefined ? fallback : Number(a.slice(name.length + 3));
      if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`--${name}: not a number: ${a}`);
      return v;
    };
    const connectPort = opt('connect-port', 5000);
    const connectBytes = opt('connect-bytes', 1 << 20);
    const irq = ctx.args.find((x) => x.startsWith('--interrupts='))?.slice('--interrupts='.length) ?? 'uio';
    if (irq !== 'uio' && irq !== 'poll') throw new RangeError(`--interrupts: uio or poll, not ${irq}`);
    const t = ctx.openVirtioDevice(VIRTIO_ID_VSOCK, { interrupts: irq });
    const driver = await VsockDriver.start(t);

    const results: ModeResult[] = [];
    let dmaOutstanding = 0;
    let maxDmaOutstanding = 0;

    const echo = (sock: VsockSocket, r: ModeResult, zeroCopy: boolean): void => {
      sock.on('data', (d: Buffer) => {
        r.echoedBytes += d.length;
        let more: boolean;
        if (zeroCopy) {
          const buf = driver.allocBuffer(d.length);
          d.copy(buf);
          dmaOutstanding += d.length;
          if (dmaOutstanding > maxDmaOutstanding) maxDmaOutstanding = dmaOutstanding;
          more = sock.write(buf, () => {
            dmaOutstanding -= buf.length;
            driver.freeBuffer(buf);
          });
        } else {
          more = sock.write(d);
        }
        if (!more) sock.pause();
      });
      sock.on('drain', () => sock.resume());
      sock.on('end', () => sock.end());
      sock.on('error', (e: Error) => {
        r.errors++;
        ctx.log(`port ${r.port} socket error: ${e.message}`);
      });
    };

    const servers = MODES.map(([port, mode]) => {
      const r: ModeResult = { port, mode, connections: 0, echoedBytes: 0, errors: 0 };
      results.push(r);
      const server = driver.createServer({ txMode: mode }, (sock) => {
        r.connections++;
        echo(sock, r, mode === 'zero-copy');
      });
      return server;
    });

    let exitRequested!: () => void;
    const exitPromise = new Promise<void>((resolve) => (exitRequested = resolve));
    const control = driver.createServer((sock) => {
      let text = '';
      let asked = false;
      sock.on('data', (d: Buffer) => {
        text += d.toString('latin1');
        if (!asked && text.includes('exit\n')) {
          asked = true;
          sock.end('bye\n');
        }
      });
      sock.on('end', () => sock.end());
      sock.on('close', () => {
        if (asked) exitRequested();
      });
      sock.on('error', (e: Error) => ctx.log(`control socket error: ${e.message}`));
    });

    await Promise.all(
      [...servers.map((s, i) => [s, MODES[i]![0]] as const), [control, CONTROL_PORT] as const].map(
        ([s, port]) =>
          new Promise<void>((resolve, reject) => {
            s.once('error', reject);
            s.listen(port, () => resolve());
          }),
      ),
    );
    ctx.log(`listening on cid ${driver.localCid} ports ${[...MODES.map((m) => m[0]), CONTROL_PORT].join(',')}`);

    // Outgoing: guest -> host CID 2, port connectPort.
    const outgoing = await new Promise<{ ok: boolean; sent: number; received: number; sha256: string; error?: string }>((resolve) => {
      const data = pattern(connectPort, connectBytes);
      const sha = createHash('sha256').update(data).digest('hex');
      const got: Buffer[] = [];
      let received = 0;
      const sock = driver.connect({ cid: HOST_CID, port: connectPort, allowHalfOpen: true, timeoutMs: 60_000 });
      sock.on('connect', () => {
        // Several writes, so more than one packet and credit round trip.
        for (let off = 0; off < data.length; off += 100_000) sock.write(data.subarray(off, Math.min(off + 100_000, data.length)));
        sock.end();
      });
      sock.on('data', (d: Buffer) => {
        got.push(d);
        received += d.length;
      });
      sock.on('end', () => {
        const back = Buffer.concat(got, received);
        resolve({ ok: back.equals(data), sent: data.length, received, sha256: sha });
      });
      sock.on('error', (e: Error) => resolve({ ok: false, sent: data.length, received, sha256: sha, error: e.message }));
    });
    process.stdout.write(`vsock-matrix: outgoing ${JSON.stringify(outgoing)}\n`);

    await exitPromise;
    for (const s of servers) s.close();
    control.close();
    process.stdout.write(
      `vsock-matrix-result: ${JSON.stringify({ cid: driver.localCid, outgoing, modes: results, maxDmaOutstanding, dmaOutstanding, stats: driver.stats, interrupts: t.interruptCount })}\n`,
    );
    driver.close();
    return 0;
  },
  { dmaPages: 16 },
);
