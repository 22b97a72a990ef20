// The daemon's log: one line per event with its time, level and VM; --log-level filters;
// at debug each connection's life (REQUEST, RESPONSE, SHUTDOWN, RST) with its ports.
import test from 'ava';
import { join } from 'node:path';
import type { DaemonConfig } from '../drivers/virtio-vsock/daemon/config.js';
import type { LogLevel } from '../drivers/virtio-vsock/daemon/logger.js';
import { acceptOnGuest, hybridConnectLine, type RawGuestDaemon, startRawGuestDaemon } from './support/daemon-raw-guest.js';
import { RawStream } from './support/vsock-raw-driver.js';

const LINE = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (error|warn |info |debug) \[(cid \d+|daemon)\] \S/;

function config(level: LogLevel) {
  return (dir: string): DaemonConfig => ({ vms: [{ guestCid: 3, socketPath: join(dir, 'v.sock'), udsPath: join(dir, 'vm.vsock') }], forwards: [], logLevel: level, notices: ['a notice at warn'] });
}

/** A host connection to guest port 5000 with data and half-close both ways, and a refused guest connect. */
async function life(fx: RawGuestDaemon): Promise<number> {
  const drv = fx.attach(3);
  const accepted = acceptOnGuest(drv, 5000);
  const { line, socket } = await hybridConnectLine(join(fx.dir, 'vm.vsock'), 5000);
  const g = await accepted;
  socket.end('x');
  await g.readAll();
  g.end();
  await new Promise<void>((r) => socket.on('close', () => r()).resume());
  await new RawStream(drv, 7001, 6999).connect().catch(() => {});
  await drv.sync();
  return Number(/^OK (\d+)$/.exec(line)![1]);
}

test('--log-level debug: every line has time, level and VM; each connection REQUEST, RESPONSE, SHUTDOWN, RST with ports', async (t) => {
  const fx = await startRawGuestDaemon('vsock-log-', config('debug'));
  t.teardown(() => fx.close());
  const hostPort = await life(fx);
  for (const l of fx.logs) t.regex(l, LINE);
  const debug = fx.logs.filter((l) => / debug \[cid 3\] /.test(l)).map((l) => l.replace(/^.*\] /, ''));
  t.true(debug.includes(`host -> guest REQUEST 2:${hostPort} -> 3:5000`), debug.join('\n'));
  t.true(debug.includes(`guest -> host RESPONSE 3:5000 -> 2:${hostPort}`));
  t.true(debug.includes(`host -> guest SHUTDOWN(SEND) 2:${hostPort} -> 3:5000`));
  t.true(debug.includes(`guest -> host SHUTDOWN(SEND) 3:5000 -> 2:${hostPort}`));
  t.true(debug.includes('guest -> host REQUEST 3:7001 -> 2:6999'));
  t.true(debug.includes('host -> guest RST 2:6999 -> 3:7001'));
  t.false(debug.some((l) => / RW | CREDIT_/.test(l)), 'data and credit packets are not logged');
  t.true(fx.logs.some((l) => / info  \[cid 3\] VM attached/.test(l)));
  t.true(fx.logs.some((l) => / warn  \[daemon\] a notice at warn$/.test(l)));
});

test('--log-level filters: info hides debug; warn hides info; error hides warn', async (t) => {
  const seen: Record<string, string[]> = {};
  for (const level of ['info', 'warn', 'error'] as const) {
    const fx = await startRawGuestDaemon('vsock-log-', config(level));
    try {
      await life(fx);
      seen[level] = fx.logs;
      for (const l of fx.logs) t.regex(l, LINE);
    } finally {
      await fx.close();
    }
  }
  t.false(seen.info!.some((l) => / debug /.test(l)));
  t.true(seen.info!.some((l) => / info  \[cid 3\] vhost-user at /.test(l)));
  t.true(seen.info!.some((l) => / info  \[cid 3\] hybrid vsock: guest port 7001 -> host port 6999: .*vm\.vsock_6999: nobody listens there: RST$/.test(l)));
  t.false(seen.warn!.some((l) => / (info |debug) /.test(l)));
  t.true(seen.warn!.some((l) => / warn  /.test(l)));
  t.deepEqual(seen.error, []);
});
