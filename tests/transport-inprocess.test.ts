import test from 'ava';
import { InProcessTransport } from '../kernel/transport/inprocess.js';
import { setupDriverQueue } from '../kernel/transport/queue-setup.js';
import { VIRTIO_F_EVENT_IDX, VIRTIO_F_VERSION_1, featureBit } from '../kernel/virtqueue/layout.js';
import { EchoDevice } from './support/echo-device.js';

const echoModule = new URL('./support/echo-device.js', import.meta.url);

async function roundTrips(t: InProcessTransport, count: number): Promise<number> {
  t.negotiate(featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_F_EVENT_IDX));
  const q = setupDriverQueue<number>(t, 0, 'echo q0', 64, true);
  t.driverOk();
  const req = t.dma.allocate(64 * 16);
  const resp = t.dma.allocate(64 * 16);
  let done = 0;
  let next = 0;
  let bad = 0;
  return new Promise<number>((resolve) => {
    const fill = (): void => {
      while (next < count && q.numFree >= 2) {
        const slot = next % 64;
        const r = req.subarray(slot * 16, slot * 16 + 16);
        new DataView(r.buffer, r.byteOffset, 16).setUint32(0, next, true);
        q.chainBegin();
        q.chainAdd(t.dma.addressOf(r), 16, false);
        q.chainAdd(t.dma.addressOf(resp) + slot * 16, 16, true);
        q.chainCommit(next);
        next++;
      }
      if (q.publish()) t.notify(0);
    };
    t.onInterrupt(() => {
      do {
        q.drainUsed((token, len) => {
          const slot = token % 64;
          const v = new DataView(resp.buffer, resp.byteOffset + slot * 16, 16).getUint32(0, true);
          if (len !== 16 || v !== token) bad++;
          done++;
        });
      } while (q.enableInterrupts());
      if (done === count) resolve(bad);
      else fill();
    });
    fill();
  });
}

test('same-thread device echoes chains through the in-process transport', async (t) => {
  const dev = new EchoDevice();
  const tr = InProcessTransport.sameThread(dev, { memoryBytes: 1 << 20 });
  try {
    t.is(await roundTrips(tr, 5000), 0);
    t.is(dev.echoed, 5000);
  } finally {
    await tr.close();
  }
});

test('worker-thread device echoes chains through the in-process transport', async (t) => {
  const tr = await InProcessTransport.worker({ module: echoModule }, { memoryBytes: 1 << 20 });
  try {
    t.is(await roundTrips(tr, 20000), 0);
  } finally {
    await tr.close();
  }
});
