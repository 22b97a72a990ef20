// The RSTs the device sends for a connection that existed carry credit: buf_alloc and a
// fwd_cnt that counts every byte the guest sent as consumed (dropped with the reset).
// Linux takes the credit of every packet before acting on it, and a socket reset while
// it holds unread bytes reports writable only with credit (see
// tests/vhost-vsock-linux-killed-client.test.ts for what an RST with buf_alloc 0 did to
// socat). RSTs for packets of no connection carry none.
import test from 'ava';
import type { VsockMuxer } from '../drivers/virtio-vsock/device/muxer.js';
import { SiblingRouter } from '../drivers/virtio-vsock/device/sibling-router.js';
import { VsockDevice } from '../drivers/virtio-vsock/device/vsock-device.js';
import { VSOCK_OP_REQUEST, VSOCK_OP_RESPONSE, VSOCK_OP_RST, VSOCK_OP_RW } from '../drivers/virtio-vsock/header.js';
import { VsockRawDriver } from './support/vsock-raw-driver.js';

test('host socket destroyed with guest bytes unread: the RST carries buf_alloc 256 KiB and fwd_cnt = every byte the guest sent', async (t) => {
  const dev = new VsockDevice({ guestCid: 3 });
  const drv = VsockRawDriver.sameThread(dev);
  try {
    let host: import('../drivers/virtio-vsock/device/host-socket.js').VsockHostSocket | null = null;
    dev.host.listen(80, (s) => {
      host = s;
      s.pause(); // never reads
      s.on('error', () => {});
    });
    drv.send({ srcPort: 1000, dstPort: 80, op: VSOCK_OP_REQUEST });
    t.is((await drv.nextOn(1000, 80)).header.op, VSOCK_OP_RESPONSE);
    for (let i = 0; i < 3; i++) drv.send({ srcPort: 1000, dstPort: 80, op: VSOCK_OP_RW }, Buffer.alloc(10_000, i));
    await drv.sync();
    host!.destroy();
    const rst = await drv.nextOn(1000, 80);
    t.is(rst.header.op, VSOCK_OP_RST);
    t.is(rst.header.bufAlloc, 256 * 1024);
    t.is(rst.header.fwdCnt, 30_000);
    // An RST for no connection: no credit.
    drv.send({ srcPort: 1001, dstPort: 81, op: VSOCK_OP_REQUEST });
    const refused = await drv.nextOn(1001, 81);
    t.is(refused.header.op, VSOCK_OP_RST);
    t.is(refused.header.bufAlloc, 0);
  } finally {
    await drv.close();
  }
});

test('a sibling that goes away: the RST to its peer carries the gone side\'s buf_alloc and fwd_cnt = every byte the peer sent', async (t) => {
  const router = new SiblingRouter<VsockMuxer>();
  const a = new VsockDevice({ guestCid: 3, router, groups: ['g'] });
  const b = new VsockDevice({ guestCid: 4, router, groups: ['g'] });
  const da = VsockRawDriver.sameThread(a);
  const db = VsockRawDriver.sameThread(b);
  try {
    da.send({ srcPort: 10, dstPort: 20, dstCid: 4, op: VSOCK_OP_REQUEST });
    await db.next((p) => p.header.op === VSOCK_OP_REQUEST);
    db.send({ srcPort: 20, dstPort: 10, dstCid: 3, op: VSOCK_OP_RESPONSE, bufAlloc: 100_000 });
    await da.next((p) => p.header.op === VSOCK_OP_RESPONSE);
    da.send({ srcPort: 10, dstPort: 20, dstCid: 4, op: VSOCK_OP_RW }, Buffer.alloc(5000));
    await db.next((p) => p.header.op === VSOCK_OP_RW);
    b.reset();
    const rst = await da.next((p) => p.header.op === VSOCK_OP_RST);
    t.is(rst.header.srcCid, 4);
    t.is(rst.header.bufAlloc, 100_000);
    t.is(rst.header.fwdCnt, 5000);
  } finally {
    await da.close();
    await db.close();
    a.dispose();
    b.dispose();
  }
});
