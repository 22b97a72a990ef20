// Issue 11's finding: host clients killed (SIGKILL) in the middle of a stream, through
// the hybrid socket, into a Linux guest's `socat VSOCK-LISTEN:...,fork EXEC:/bin/cat`
// echo. The daemon must answer each dead client with an RST to the guest; what the guest
// then does with its socket is Linux's (net/vmw_vsock/virtio_transport_common.c:
// virtio_transport_recv_connected, case VIRTIO_VSOCK_OP_RST -> virtio_transport_do_close:
// SOCK_DONE, peer_shutdown = SHUTDOWN_MASK, TCP_CLOSING once the receive queue is empty,
// sk_state_change wakes every waiter; the socket is freed when its process closes it).
// A socket reset while it still holds unread bytes stays TCP_ESTABLISHED, and poll()
// reports EPOLLOUT only with credit (af_vsock.c vsock_poll); the RST's own buf_alloc and
// fwd_cnt are taken first (virtio_transport_recv_pkt -> virtio_transport_space_update).
// An RST with buf_alloc 0 left socat (which reads one side only when it can write the
// other) asleep in select with its cat blocked writing to it: 2 to 7 of 15 stayed for
// good. The device's RSTs now carry its window with every guest byte counted as
// consumed; this file asserts that no guest-side socat child stays (where one sleeps is
// logged: /proc/PID/wchan and stack).
import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { startLinuxGuest, type LinuxGuest } from '../appliance/qemu/start.js';
import { GUEST_CID, pause, startTestDaemon, waitGuestListening, type DaemonFixture } from './support/linux-vsock-guest.js';

const SAFETY_TIMEOUT_MS = 25 * 60 * 1000; // kills a stuck QEMU; not an assertion
const PORT = 7100;
const CLIENTS = 15;

let fx: DaemonFixture | null = null;
let guest: LinuxGuest | null = null;
const clients: ChildProcess[] = [];

test.before(async () => {
  fx = await startTestDaemon('vhost-vsock-killed-client-');
  guest = await startLinuxGuest({ launch: { vhostUserVsock: { socket: fx.socket }, timeoutMs: SAFETY_TIMEOUT_MS } });
});

test.after.always(async (t) => {
  // ChildProcess.kill does not throw for a client that is gone already (process.kill did,
  // with ESRCH, and the guest below was then never stopped: the file never exited).
  for (const c of clients) c.kill('SIGKILL');
  if (guest?.qemu.running) await guest.qemu.stop();
  if (fx) t.log(`daemon log (last 40 lines):\n${await fx.dispose()}`);
});

/** A host process that CONNECTs through the hybrid socket and writes without end, never reading; prints "connected" at the OK, "flowing" after 256 KiB. */
const CLIENT_SOURCE = `
const net = require('node:net');
const s = net.connect({ path: process.argv[1] });
const chunk = Buffer.alloc(65536, 0x61);
let sent = 0, said = false, ok = false, buf = '';
s.on('error', () => process.exit(3));
s.on('data', (d) => {
  if (ok) return;
  buf += d.toString('latin1');
  if (!buf.includes('\\n')) return;
  if (!buf.startsWith('OK ')) process.exit(2);
  ok = true;
  process.stdout.write('connected\\n');
  s.pause(); // never read the echo
  const go = () => {
    while (s.write(chunk)) { sent += chunk.length; if (!said && sent >= 256 << 10) { said = true; process.stdout.write('flowing\\n'); } }
    sent += chunk.length;
  };
  s.on('drain', go);
  go();
});
s.write('CONNECT ${PORT}\\n');
`;

/** Bounds for the waits below: generous for a loaded machine, far below the test's timeout. */
const FLOWING_WITHIN_MS = 2 * 60_000;
const SETTLE_WITHIN_MS = 3 * 60_000;

/** `describeDevice` says what the device holds, for a client that does not get going. */
function startClient(uds: string, index: number, describeDevice: () => string): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, ['-e', CLIENT_SOURCE, uds], { stdio: ['ignore', 'pipe', 'inherit'] });
    clients.push(c);
    let connected = false;
    const timer = setTimeout(() => {
      const where = connected ? 'connected (OK), but not 256 KiB into its stream' : 'no answer to its CONNECT';
      reject(new Error(`client ${index + 1} of ${CLIENTS} (pid ${c.pid}): ${where} after ${FLOWING_WITHIN_MS / 1000} s; the device: ${describeDevice()}`));
    }, FLOWING_WITHIN_MS);
    c.stdout!.on('data', (d: Buffer) => {
      if (d.toString().includes('connected')) connected = true;
      if (d.toString().includes('flowing')) {
        clearTimeout(timer);
        resolve(c);
      }
    });
    c.once('exit', (code, sig) => {
      clearTimeout(timer);
      reject(new Error(`client exited early: ${code ?? sig}`));
    });
  });
}

interface Child {
  pid: number;
  comm: string;
  ppid: number;
  wchan: string;
}

async function processes(g: LinuxGuest): Promise<Child[]> {
  const r = await g.shell.run('for d in /proc/[0-9]*; do p=${d#/proc/}; [ -r $d/stat ] || continue; set -- $(cat $d/stat 2>/dev/null); echo "$p $4 $(cat $d/comm 2>/dev/null) $(cat $d/wchan 2>/dev/null)"; done');
  return r.output
    .split('\n')
    .map((l) => l.trim().split(/\s+/))
    .filter((f) => f.length >= 3 && /^\d+$/.test(f[0]!))
    .map((f) => ({ pid: Number(f[0]), ppid: Number(f[1]), comm: f[2]!, wchan: f[3] ?? '' }));
}

test.serial(`${CLIENTS} host clients killed mid-stream into socat fork EXEC:/bin/cat: the daemon ends each connection; no guest-side socat child stays`, async (t) => {
  t.timeout(12 * 60_000);
  const g = guest!;
  // backlog=32: socat's default listen backlog is 5, and a vsock REQUEST that finds the
  // accept queue full is answered with RST (the client then got "ERR ...", not "OK").
  const job = await g.shell.runBackground(`socat VSOCK-LISTEN:${PORT},reuseaddr,fork,backlog=32 EXEC:/bin/cat`);
  await waitGuestListening(fx!.uds, PORT);
  const dev = fx!.daemon.devices.get(GUEST_CID)!;
  const rstBefore = dev.stats.rstSent;
  // One after another: each is accepted and flowing before the next connects.
  const procs: ChildProcess[] = [];
  const describeDevice = (): string => `${dev.connections} connections, stats ${JSON.stringify(dev.stats)}`;
  for (let i = 0; i < CLIENTS; i++) procs.push(await startClient(fx!.uds, i, describeDevice));
  t.is(dev.connections, CLIENTS);
  for (const c of procs) c.kill('SIGKILL');
  // The daemon sees each host socket close and resets its connection: no connection left.
  for (const end = Date.now() + SETTLE_WITHIN_MS; dev.connections > 0 && Date.now() < end; ) await pause(50);
  t.is(dev.connections, 0);
  // A client killed with bytes it had not read resets its Unix socket (the device sends
  // RST); one killed with nothing unread closes it (the device sends SHUTDOWN, and the
  // guest ends the connection): how many of each depends on the moment of the kill.
  t.log(`RSTs sent by the device: ${dev.stats.rstSent - rstBefore} for ${CLIENTS} connections (answers to packets that crossed a reset included)`);
  // Let the guest run what the RSTs woke: poll until no socat child is left, or every one
  // left is in the deadlock that never ends (socat in select, its cat blocked writing to
  // it) in three looks in a row. A bounded poll, not a verdict by time.
  let children: Child[] = [];
  const stuck = (all: Child[], c: Child): boolean => c.wchan === 'do_select' && all.some((k) => k.ppid === c.pid && /sock_alloc_send_pskb|pipe_write|unix_stream/.test(k.wchan));
  for (let end = Date.now() + SETTLE_WITHIN_MS, settled = 0; Date.now() < end && settled < 3; ) {
    await pause(250);
    const all = await processes(g);
    const listener = all.filter((p) => p.comm === 'socat').sort((a, b) => a.pid - b.pid)[0];
    children = all.filter((p) => p.comm === 'socat' && p.pid !== listener?.pid);
    if (children.length === 0) break;
    settled = children.every((c) => stuck(all, c)) ? settled + 1 : 0;
  }
  const all = await processes(g);
  const lines = children.map((c) => {
    const cats = all.filter((p) => p.ppid === c.pid);
    return `socat ${c.pid} sleeps in ${c.wchan || '?'}; ${cats.map((k) => `${k.comm} ${k.pid} in ${k.wchan || '?'}`).join(', ') || 'no child'}`;
  });
  t.log(`guest-side socat children alive after the connections ended: ${children.length} of ${CLIENTS}\n${lines.join('\n')}`);
  const stacks = await g.shell.run(`for p in ${children.map((c) => c.pid).join(' ')}; do echo "== $p"; cat /proc/$p/stack 2>/dev/null | head -6; done`);
  t.log(stacks.output);
  await g.shell.run(`kill ${job.pid}; pkill socat; true`);
  // Every RST carries the device's window with all the guest's bytes counted as consumed
  // (muxer.ts queueRst): the guest socket polls writable, socat writes, gets EPIPE, exits.
  t.is(children.length, 0);
});
