// The in-process transport with the echo device, in the same thread and in a worker:
// the ring layout follows the features the driver accepts (split; packed; packed with
// VIRTIO_F_IN_ORDER), and the device half matches it.
import test from 'ava';
import { InProcessTransport } from '../kernel/transport/inprocess.js';
import { setupDriverQueue } from '../kernel/transport/queue-setup.js';
import { VIRTIO_F_EVENT_IDX, VIRTIO_F_IN_ORDER, VIRTIO_F_RING_PACKED, VIRTIO_F_VERSION_1, featureBit } from '../kernel/virtqueue/layout.js';
import { acceptRingFeatures } from '../kernel/virtqueue/ring.js';
import { EchoDevice } from './support/echo-device.js';

const echoModule = new URL('./support/echo-device.js', import.meta.url);

const BASE_FEATURES = featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_F_EVENT_IDX);
const VARIANTS = [
  { title: 'split', features: BASE_FEATURES, layout: 'split' },
  { title: 'packed', features: BASE_FEATURES | featureBit(VIRTIO_F_RING_PACKED), layout: 'packed' },
  { title: 'packed, in order', features: BASE_FEATURES | featureBit(VIRTIO_F_RING_PACKED) | featureBit(VIRTIO_F_IN_ORDER), layout: 'packed' },
] as const;

async function roundTrips(t: InProcessTransport, count: number, features: bigint = BASE_FEATURES, layout = 'split'): Promise<number> {
  t.negotiate(features);
  const q = setupDriverQueue<number>(t, 0, 'echo q0', 64, features);
  if (q.layout !== layout) throw new Error(`layout ${q.layout}, expected ${layout}`);
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

for (const v of VARIANTS) {
  test(`${v.title}: same-thread device echoes chains through the in-process transport`, async (t) => {
    const dev = new EchoDevice();
    const tr = InProcessTransport.sameThread(dev, { memoryBytes: 1 << 20 });
    try {
      t.is(await roundTrips(tr, 5000, v.features, v.layout), 0);
      t.is(dev.echoed, 5000);
    } finally {
      await tr.close();
    }
  });

  test(`${v.title}: worker-thread device echoes chains through the in-process transport`, async (t) => {
    const tr = await InProcessTransport.worker({ module: echoModule }, { memoryBytes: 1 << 20 });
    try {
      t.is(await roundTrips(tr, 20000, v.features, v.layout), 0);
    } finally {
      await tr.close();
    }
  });
}

test('a driver accepts the packed layout when offered, unless told otherwise; forcing it on a device without it fails', (t) => {
  const offered = new EchoDevice().features;
  const packed = featureBit(VIRTIO_F_RING_PACKED);
  t.is(acceptRingFeatures(offered) & packed, packed);
  t.is(acceptRingFeatures(offered, { ring: 'split' }) & packed, 0n);
  t.is(acceptRingFeatures(offered, { ring: 'split' }) & featureBit(VIRTIO_F_IN_ORDER), 0n, 'IN_ORDER only with packed rings');
  t.is(acceptRingFeatures(offered, { eventIdx: false }) & featureBit(VIRTIO_F_EVENT_IDX), 0n);
  const err = t.throws(() => acceptRingFeatures(BASE_FEATURES, { ring: 'packed' }, 'echo'));
  t.regex(err!.message, /^echo: the packed ring layout was asked for/);
});
