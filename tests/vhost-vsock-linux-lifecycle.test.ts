// Issue 4's QEMU matrix, part 2: the lifecycle of the VM behind our vhost-user-vsock
// daemon (startDaemon, real kernel/vhost-user server), with a stock Linux guest:
//   - QEMU killed (SIGKILL) in the middle of transfers in both directions: the daemon
//     stays up, that VM's host sockets see an error or a close, and
//   - a second QEMU on the same vhost-user socket path works (both directions);
//   - the guest's driver restarts (rmmod + insmod vmw_vsock_virtio_transport: device
//     reset, rings stopped and started again) and connections work after it;
//   - the guest reboots (reboot -f: machine reset under the same QEMU and vhost-user
//     connection, a new kernel's driver) and connections work after it.
// Two boots: the second is the point of the kill test; it runs with -action
// reboot=reset (overriding the launcher's -no-reboot) so that the guest can reboot.
import test from 'ava';
import { rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { GuestShell, LINUX_GUEST_READY_MARKER } from '../appliance/qemu/guest-shell.js';
import { startLinuxGuest, type LinuxGuest } from '../appliance/qemu/start.js';
import {
  GUEST_CID,
  collect,
  deterministicBytes,
  hybridConnect,
  hybridConnectRetry,
  HybridRefused,
  sha256Hex,
  startTestDaemon,
  tcpConnect,
  waitGuestListening,
  writeChunks,
  type Collected,
  type DaemonFixture,
} from './support/linux-vsock-guest.js';

const SAFETY_TIMEOUT_MS = 25 * 60 * 1000; // kills a stuck QEMU; not an assertion

let fx: DaemonFixture | null = null;
const guests: LinuxGuest[] = [];
const servers: Server[] = [];

const FWD_ECHO = 7102; // guest port behind the TCP forward

test.before(async () => {
  fx = await startTestDaemon('vhost-vsock-linux-life-', [FWD_ECHO]);
});

test.after.always(async (t) => {
  for (const g of guests) if (g.qemu.running) await g.qemu.stop();
  for (const s of servers) s.close();
  if (fx) {
    await fx.daemon.close();
    rmSync(fx.dir, { recursive: true, force: true });
  }
  t.log(`daemon log (last 40 lines):\n${fx?.logs.slice(-40).join('\n')}`);
});

/** Boots a guest on the daemon; `rebootable`: a guest reboot resets the machine instead of ending QEMU (the launcher passes -no-reboot; a later -action overrides it). */
async function boot(rebootable = false): Promise<LinuxGuest> {
  const extraArgs = rebootable ? ['-action', 'reboot=reset'] : [];
  const g = await startLinuxGuest({ launch: { vhostUserVsock: { socket: fx!.socket }, timeoutMs: SAFETY_TIMEOUT_MS, extraArgs } });
  guests.push(g);
  return g;
}

/** A host listener at <uds>_port; every accepted socket is handed to onSocket. */
async function hostListen(port: number, onSocket: (s: Socket) => void): Promise<void> {
  const srv = createServer({ allowHalfOpen: true }, onSocket);
  servers.push(srv);
  await new Promise<void>((r) => srv.listen(`${fx!.uds}_${port}`, r));
}

/** Endless 64 KiB chunks (until the socket fails). */
function* endless(): Generator<Buffer> {
  const chunk = deterministicBytes('endless', 64 * 1024);
  for (;;) yield chunk;
}

/** Echo round trip through the hybrid socket to a `fork` echo listener on `port`. */
async function echoOnce(port: number, seed: string): Promise<boolean> {
  const data = deterministicBytes(seed, 200 * 1024);
  const s = await hybridConnect(fx!.uds, port);
  const back = collect(s);
  await writeChunks(s, [data]);
  const r = await back;
  return r.how === 'end' && r.sha256 === sha256Hex(data);
}

/** Guest -> host: the guest sends `text` to CID 2 port `port`, the host listener echoes "host:" + it. */
async function guestToHost(g: LinuxGuest, port: number, text: string): Promise<string> {
  const r = await g.shell.run(`echo ${text} | socat -t 60 - VSOCK-CONNECT:2:${port}`, { timeoutMs: 120_000 });
  return `${r.status}:${r.output}`;
}

test.serial('QEMU killed mid-transfer: the daemon stays up, host sockets of that VM close, a second QEMU on the same socket works', async (t) => {
  t.timeout(12 * 60_000);
  await hostListen(7200, (s) => {
    s.on('data', (d: Buffer) => s.write(Buffer.concat([Buffer.from('host:'), d])));
    s.on('end', () => s.end());
    s.on('error', () => {});
  });
  // Guest -> host stream, counted on the host.
  let inbound: Promise<Collected> | null = null;
  let inboundBytes = 0;
  let inboundReached: () => void = () => {};
  const inboundFlowing = new Promise<void>((r) => (inboundReached = r));
  await hostListen(7101, (s) => {
    inbound = collect(s, false);
    s.on('data', (c: Buffer) => {
      inboundBytes += c.length;
      if (inboundBytes >= 2 * 1024 * 1024) inboundReached();
    });
  });

  const g1 = await boot();
  await g1.shell.runBackground('socat -u -b 65536 VSOCK-LISTEN:7100 OPEN:/dev/null');
  await g1.shell.runBackground('socat -u -b 65536 OPEN:/dev/zero VSOCK-CONNECT:2:7101');
  await g1.shell.runBackground(`socat -t 600 -b 65536 VSOCK-LISTEN:${FWD_ECHO},reuseaddr,fork EXEC:cat`);
  await waitGuestListening(fx!.uds, FWD_ECHO);
  // A TCP forward connection with a round trip done, left open.
  const tcp = await tcpConnect(fx!.daemon.forwards[0]!.address()!.port);
  const tcpFirst = new Promise<void>((r) => tcp.once('data', () => r()));
  const tcpClosed = collect(tcp, false);
  tcp.write('ping');
  await tcpFirst;
  const out = await hybridConnectRetry(fx!.uds, 7100);
  const outClosed = collect(out, false);
  let outReached: () => void = () => {};
  const outFlowing = new Promise<void>((r) => (outReached = r));
  const writer = writeChunks(out, endless(), {
    onProgress: (n) => {
      if (n >= 4 * 1024 * 1024) outReached();
    },
  }).then(
    () => 'finished',
    (e: Error) => `failed: ${e.message}`,
  );
  await Promise.all([outFlowing, inboundFlowing]);
  const dev = fx!.daemon.devices.get(GUEST_CID)!;
  t.is(dev.connections, 3);

  process.kill(g1.qemu.pid, 'SIGKILL');
  const exit = await g1.qemu.exited;
  t.is(exit.signal, 'SIGKILL');
  // Both host sockets of the dead VM settle (error or close), the endless writer stops.
  const [o, i, w, f] = await Promise.all([outClosed, inbound!, writer, tcpClosed]);
  t.log(`host->guest hybrid socket: ${o.how} after ${o.bytes} bytes read; writer ${w}; guest->host <uds>_P socket: ${i.how} after ${i.bytes} bytes; TCP forward socket: ${f.how}`);
  t.regex(w, /^failed: /);
  // TCP has a reset: the forward's client must not read an orderly end of a stream that was cut.
  t.is(f.how, 'ECONNRESET');
  t.true(i.bytes >= 2 * 1024 * 1024);
  t.is(dev.connections, 0);

  // The daemon is up: the hybrid socket answers (no guest now: an error, not a hang).
  const err = await hybridConnect(fx!.uds, 7100).then(
    () => null,
    (e: unknown) => e,
  );
  t.true(err instanceof HybridRefused, String(err));

  // A second QEMU on the same socket path.
  const g2 = await boot(true);
  await g2.shell.runBackground('socat -t 600 -b 65536 VSOCK-LISTEN:7300,reuseaddr,fork EXEC:cat');
  await waitGuestListening(fx!.uds, 7300);
  t.true(await echoOnce(7300, 'second qemu'));
  t.is(await guestToHost(g2, 7200, 'second'), '0:host:second');
});

test.serial('guest driver restart (rmmod/insmod vmw_vsock_virtio_transport) resets the device; connections work after it', async (t) => {
  t.timeout(12 * 60_000);
  const g = guests[guests.length - 1]!;
  t.true(g.qemu.running);
  // Every vsock socket in the guest holds the transport module: stop the listeners first.
  await g.shell.run("pkill -f 'VSOCK-' ; true");
  const before = fx!.logs.length;
  const r = await g.shell.run(
    'm=$(find /lib/modules -name "vmw_vsock_virtio_transport.ko*" | head -n 1); rmmod vmw_vsock_virtio_transport && echo removed && insmod "$m" && echo loaded',
    { timeoutMs: 5 * 60_000 },
  );
  t.is(r.status, 0, r.output);
  t.regex(r.output, /removed\nloaded/);
  t.log(`daemon log during the restart:\n${fx!.logs.slice(before).join('\n')}`);
  await g.shell.runBackground('socat -t 600 -b 65536 VSOCK-LISTEN:7301,reuseaddr,fork EXEC:cat');
  await waitGuestListening(fx!.uds, 7301);
  t.true(await echoOnce(7301, 'after driver restart'));
  t.is(await guestToHost(g, 7200, 'restarted'), '0:host:restarted');
});

test.serial('guest reboot (reboot -f, machine reset, same QEMU and vhost-user connection): connections work after it', async (t) => {
  t.timeout(12 * 60_000);
  const g = guests[guests.length - 1]!;
  t.true(g.qemu.running);
  // An open connection across the reboot: the host side must settle.
  const held = await hybridConnect(fx!.uds, 7301);
  const heldClosed = collect(held, false);
  const before = fx!.logs.length;
  const readyAgain = new Promise<'ready'>((resolve) => {
    const off = g.qemu.onLine((l) => {
      if (l.includes(LINUX_GUEST_READY_MARKER)) {
        off();
        resolve('ready');
      }
    });
  });
  g.qemu.write('reboot -f\n');
  const first = await Promise.race([readyAgain, g.qemu.exited.then(() => 'exited' as const)]);
  t.is(first, 'ready', 'the guest came back (QEMU did not exit)');
  t.log(`held connection across the reboot: ${(await heldClosed).how}`);
  t.log(`daemon log during the reboot:\n${fx!.logs.slice(before).join('\n')}`);
  const shell = new GuestShell(g.qemu);
  await shell.runBackground('socat -t 600 -b 65536 VSOCK-LISTEN:7302,reuseaddr,fork EXEC:cat');
  await waitGuestListening(fx!.uds, 7302);
  t.true(await echoOnce(7302, 'after reboot'));
  const r = await shell.run('echo rebooted | socat -t 60 - VSOCK-CONNECT:2:7200', { timeoutMs: 120_000 });
  t.deepEqual(r, { output: 'host:rebooted', status: 0 });
  const dev = fx!.daemon.devices.get(GUEST_CID)!;
  t.is(dev.stats.dropped.creditViolation, 0);
  t.is(dev.stats.dropped.protocolViolation, 0);
  t.is(dev.stats.dropped.internalError, 0);
  await shell.poweroff();
});
