// The vhost-user server against real QEMU 7.2 (vhost-user-vsock-pci, TCG) and a stock
// Linux 6.1 guest using its own virtio-vsock driver, with our VsockDevice as the model:
//  - guest -> host connections through rings 0 and 1;
//  - a driver unbind/bind in the guest (device reset: ENABLE 0, GET_VRING_BASE, then a
//    new start with a fresh SET_MEM_TABLE and no SET_OWNER), then connections again;
//  - poweroff (QEMU disconnects), then a second QEMU served on the same socket;
//  - guest RAM that QEMU cannot share (memfd with share=off; plain RAM without an fd)
//    reported as ERR_VHOST_USER_MEMORY_NOT_SHARED instead of silent connect time-outs.
import test, { type ExecutionContext } from 'ava';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { startLinuxGuest, type LinuxGuest } from '../appliance/qemu/start.js';
import { VsockDevice } from '../drivers/virtio-vsock/device/vsock-device.js';
import type { VhostUserError } from '../kernel/vhost-user/errors.js';
import { type VhostUserServer, startVhostUserServer } from '../kernel/vhost-user/server.js';

const PORT = 5000;
const SAFETY_TIMEOUT_MS = 10 * 60 * 1000; // kills a stuck QEMU; not an assertion

interface Setup {
  path: string;
  server: VhostUserServer;
  device: VsockDevice;
  logs: string[];
  warnings: VhostUserError[];
  guests: LinuxGuest[];
}

async function setup(t: ExecutionContext): Promise<Setup> {
  const dir = mkdtempSync(join(tmpdir(), 'tsvirtio-vhost-qemu-'));
  const path = join(dir, 'vsock.sock');
  const device = new VsockDevice({ guestCid: 3 });
  const logs: string[] = [];
  const server = await startVhostUserServer({ socketPath: path, model: device, log: (level, m) => logs.push(`${level}: ${m}`) });
  const s: Setup = { path, server, device, logs, warnings: [], guests: [] };
  server.on('warning', (err: VhostUserError) => s.warnings.push(err));
  const listener = device.host.listen(PORT, (sock) => {
    sock.on('data', (d: Buffer) => sock.write(Buffer.concat([Buffer.from('echo:'), d])));
    sock.on('end', () => sock.end());
    sock.on('error', () => sock.destroy());
  });
  t.teardown(async () => {
    for (const g of s.guests) if (g.qemu.running) await g.qemu.stop();
    listener.close();
    await server.close();
    rmSync(dir, { recursive: true, force: true });
    if (!t.passed) t.log(logs.filter((l) => !l.startsWith('debug')).join('\n'));
  });
  return s;
}

async function boot(s: Setup, extraArgs: string[] = [], memoryMiB?: number): Promise<LinuxGuest> {
  const g = await startLinuxGuest({ launch: { vhostUserVsock: { socket: s.path }, extraArgs, memoryMiB, timeoutMs: SAFETY_TIMEOUT_MS } });
  s.guests.push(g);
  return g;
}

const connectCmd = (text: string): string => `echo ${text} | socat -t 2 - VSOCK-CONNECT:2:${PORT}`;

test.serial('Linux guest over QEMU 7.2: connections, driver rebind (device reset), poweroff, a second QEMU', async (t) => {
  const s = await setup(t);
  const started: number[] = [];
  const mapped: string[] = [];
  s.server.on('ring-started', (_id: number, index: number) => started.push(index));
  s.server.on('memory-mapped', (_id: number, d: string) => mapped.push(d));

  const g = await boot(s);
  t.deepEqual(await g.shell.run(connectCmd('hello'), { timeoutMs: 30000 }), { output: 'echo:hello', status: 0 });
  t.deepEqual(await g.shell.run(`for i in 1 2 3; do ${connectCmd('x$i')}; done`, { timeoutMs: 30000 }), { output: 'echo:x1\necho:x2\necho:x3', status: 0 });
  t.deepEqual([...started].sort(), [0, 1], 'QEMU hands the back end rings 0 and 1 only');
  t.is(mapped.length, 1);

  // Device reset from inside the guest: QEMU stops the rings and starts them again with a
  // fresh memory table; the model is reset in between.
  const driver = '/sys/bus/virtio/drivers/vmw_vsock_virtio_transport';
  const dev = (await g.shell.run(`ls ${driver} | grep virtio`)).output.trim();
  t.regex(dev, /^virtio\d+$/);
  const r = await g.shell.run(`echo ${dev} > ${driver}/unbind && echo ${dev} > ${driver}/bind && sleep 1 && ${connectCmd('again')}`, { timeoutMs: 30000 });
  t.deepEqual(r, { output: 'echo:again', status: 0 });
  t.deepEqual([...started].sort(), [0, 0, 1, 1]);
  t.is(mapped.length, 2, 'a new SET_MEM_TABLE after the reset');
  t.true(s.logs.some((l) => l.includes('every ring stopped: device reset')));

  const gone = once(s.server, 'client-disconnected');
  await g.shell.poweroff();
  const [, end] = await gone;
  t.is(end.reason, 'eof');
  t.is(s.server.currentClient, null);

  // The next QEMU on the same socket.
  const g2 = await boot(s);
  t.deepEqual(await g2.shell.run(connectCmd('second'), { timeoutMs: 30000 }), { output: 'echo:second', status: 0 });
  await g2.shell.poweroff();
  t.deepEqual(s.warnings, []);
});

test.serial('guest RAM mapped privately by QEMU (memfd share=off) is reported', async (t) => {
  const s = await setup(t);
  const g = await boot(s, ['-object', 'memory-backend-memfd,id=privmem,size=1024M,share=off', '-machine', 'memory-backend=privmem']);
  const warned = s.warnings.length > 0 ? Promise.resolve() : once(s.server, 'warning');
  const r = await g.shell.run(connectCmd('lost'), { timeoutMs: 30000 });
  t.not(r.status, 0, 'the guest cannot connect');
  await warned;
  t.is(s.warnings[0]?.code, 'ERR_VHOST_USER_MEMORY_NOT_SHARED');
  t.regex(s.warnings[0]?.message ?? '', /available ring never changed.*share=on/);
  await g.shell.poweroff();
});

test.serial('guest RAM without an fd (QEMU cannot send a memory table) is reported', async (t) => {
  const s = await setup(t);
  const warned = once(s.server, 'warning');
  const g = await boot(s, ['-object', 'memory-backend-ram,id=plainmem,size=1024M', '-machine', 'memory-backend=plainmem']);
  await warned;
  t.is(s.warnings[0]?.code, 'ERR_VHOST_USER_MEMORY_NOT_SHARED');
  t.regex(s.warnings[0]?.message ?? '', /no memory table/);
  await g.shell.poweroff();
});

test.serial('a 6 GiB guest: RAM above 4 GiB (a 4 GiB region, mapped in chunks) carries the rings', async (t) => {
  const s = await setup(t);
  const mapped: string[] = [];
  s.server.on('memory-mapped', (_id: number, d: string) => mapped.push(d));
  const g = await boot(s, [], 6144);
  t.deepEqual(await g.shell.run(connectCmd('high'), { timeoutMs: 30000 }), { output: 'echo:high', status: 0 });
  t.regex(mapped[0] ?? '', /guest 0x100000000\.\.0x200000000/);
  await g.shell.poweroff();
});
