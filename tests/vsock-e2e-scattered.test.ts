// Guest memory laid out like hugepages: pages at scrambled, non-adjacent addresses.
// Zero-copy writes of DMA buffers spanning several pages must reach the host intact
// (a descriptor must never run past its page), in the driver and in the device.
import test from 'ava';
import { createHash } from 'node:crypto';
import type { Duplex } from 'node:stream';
import { InProcessTransport } from '../kernel/transport/inprocess.js';
import { VsockDevice } from '../drivers/virtio-vsock/device/vsock-device.js';
import { VsockDriver } from '../drivers/virtio-vsock/index.js';

const PAGE = 2 * 1024 * 1024; // as hugepages

test('zero-copy writes across scattered pages arrive intact', async (t) => {
  const device = new VsockDevice({ guestCid: 9 });
  const tr = InProcessTransport.sameThread(device, { memoryBytes: 48 << 20, scatterPageSize: process.env.NOSCATTER ? undefined : PAGE });
  const driver = await VsockDriver.start(tr, { connectTimeoutMs: 300_000, txMode: 'auto' });
  try {
    const received: Buffer[] = [];
    const done = new Promise<void>((resolve, reject) => {
      device.host.listen(4000, (s: Duplex) => {
        s.on('data', (d: Buffer) => received.push(d));
        s.once('end', () => {
          s.end();
          resolve();
        });
        s.once('error', reject);
      });
    });
    const sock = driver.connect({ cid: 2, port: 4000 });
    await new Promise<void>((resolve, reject) => {
      sock.once('connect', resolve);
      sock.once('error', reject);
    });
    const hash = createHash('sha256');
    // Buffers of odd sizes so that every write starts at a different page offset.
    for (const size of [3 * PAGE + 123, PAGE - 7, 5 * PAGE + 4096, 200_000]) {
      const buf = driver.allocBuffer(size);
      for (let i = 0; i < size; i++) buf[i] = (i * 31 + size) & 0xff;
      hash.update(buf);
      await new Promise<void>((resolve, reject) => sock.write(buf, (e) => (e ? reject(e) : resolve())));
      driver.freeBuffer(buf);
    }
    sock.end();
    await done;
    t.is(createHash('sha256').update(Buffer.concat(received)).digest('hex'), hash.digest('hex'));
    t.true(driver.stats.txZeroCopyBytes > 0, 'the zero-copy path ran');
    t.is(driver.stats.txCopiedBytes, 0);
  } finally {
    driver.close();
    await tr.close();
  }
});
