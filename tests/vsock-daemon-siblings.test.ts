// The daemon's sibling groups (--vm ...,group=NAME): startDaemon with three VMs from the
// command line, each driven by a raw test driver behind a fake vhost-user server. VMs
// sharing a group exchange data (SHA-256 checked both ways); a VM outside the group is
// refused at once; the metrics count sibling connections; a VM that goes away resets
// its siblings' connections. The device-level cases are tests/vsock-sibling-routing.test.ts.
import test from 'ava';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { parseArgs, type DaemonConfig } from '../drivers/virtio-vsock/daemon/config.js';
import { VSOCK_OP_REQUEST, VSOCK_OP_RST } from '../drivers/virtio-vsock/header.js';
import { startRawGuestDaemon } from './support/daemon-raw-guest.js';
import { RawStream } from './support/vsock-raw-driver.js';

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

function bytes(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 13 + seed) & 0xff;
  return b;
}

test('--vm group=: guests of a group reach each other through the daemon, others get RST, metrics count it, a detached VM resets its peers', async (t) => {
  const fx = await startRawGuestDaemon('vsock-daemon-siblings-', (dir) => {
    const vm = (cid: number, extra: string): string[] => ['--vm', `guest-cid=${cid},socket=${join(dir, `v${cid}.sock`)}${extra}`];
    const p = parseArgs([...vm(3, ',group=lab'), ...vm(4, ',groups=lab+other'), ...vm(5, ''), '--log-level', 'info']) as { help: false; config: DaemonConfig };
    return p.config;
  });
  try {
    await fx.waitLog(/\[cid 4\].*sibling groups lab\+other/);
    const a = fx.attach(3, { seqpacket: true });
    const b = fx.attach(4, { seqpacket: true });
    const c = fx.attach(5);
    const client = new RawStream(a, 1234, 80, 64 * 1024, { cid: 4 });
    const server = new RawStream(b, 80, -1, 64 * 1024, { cid: 3 });
    const accepted = server.accept();
    await client.connect();
    await accepted;
    const up = bytes(256 * 1024, 1);
    const down = bytes(300 * 1024, 2);
    server.creditUpdateEvery = 1; // as a Linux reader: an update per packet, most of them held back
    await Promise.all([client.write(up), server.write(down)]);
    client.end();
    server.end();
    t.is(sha(await server.readAll()), sha(up));
    t.is(sha(await client.readAll()), sha(down));
    const m = fx.daemon.renderMetrics();
    t.regex(m, /vsock_sibling_connections_open\{cid="3"\} 1/);
    t.regex(m, /vsock_sibling_connections_open\{cid="5"\} 0/);
    t.regex(m, new RegExp(`vsock_sibling_sent_total\\{cid="3",unit="bytes"\\} ${up.length}`));
    t.regex(m, /vsock_sibling_credit_updates_held_total\{cid="4"\} [1-9]\d*\n/);
    // CID 5 has no group: it reaches only the host, and nobody reaches it.
    c.send({ srcPort: 9, dstPort: 80, dstCid: 3, op: VSOCK_OP_REQUEST });
    t.is((await c.nextOn(9, 80)).header.op, VSOCK_OP_RST);
    a.send({ srcPort: 10, dstPort: 80, dstCid: 5, op: VSOCK_OP_REQUEST });
    t.is((await a.nextOn(10, 80)).header.op, VSOCK_OP_RST);
    t.regex(fx.daemon.renderMetrics(), /vsock_guest_packets_refused_total\{cid="3",reason="unknownDstCid"\} 1/);
    // The VM of CID 4 goes away: CID 3's connection with it is reset.
    const second = new RawStream(a, 1235, 81, 64 * 1024, { cid: 4 });
    const server2 = new RawStream(b, 81, -1, 64 * 1024, { cid: 3 });
    const acc2 = server2.accept();
    await second.connect();
    await acc2;
    await fx.detach(4);
    await a.until(() => second.reset);
    t.is(fx.daemon.devices.get(3)!.siblingConnections, 0);
    a.send({ srcPort: 11, dstPort: 80, dstCid: 4, op: VSOCK_OP_REQUEST });
    t.is((await a.nextOn(11, 80)).header.op, VSOCK_OP_RST);
  } finally {
    await fx.close();
  }
});
