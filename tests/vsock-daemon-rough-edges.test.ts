// The daemon's rough edges, fixed: a restart after kill -9 with the same flags (stale
// socket files removed, only when nothing listens on them); a live daemon's sockets never
// taken over; a regular file never deleted; every socket error names its path or
// address; host connects refused at once while the VM is not attached; a vhost-user
// front end that does not read its replies dropped with a message, the daemon serving on.
import test from 'ava';
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DaemonConfig } from '../drivers/virtio-vsock/daemon/config.js';
import { startDaemon } from '../drivers/virtio-vsock/daemon/daemon.js';
import { encodeMessage } from '../kernel/vhost-user/codec.js';
import { VhostUserFrontend } from '../kernel/vhost-user/frontend-client.js';
import { Request, VERSION } from '../kernel/vhost-user/protocol.js';
import { acceptOnGuest, hybridConnectLine, startRawGuestDaemon } from './support/daemon-raw-guest.js';
import { spawnDaemon } from './support/daemon-process.js';

/** Stops a child process by its id (SIGTERM, then SIGKILL); resolves with its exit code or signal. */
async function stop(child: ChildProcess): Promise<string> {
  if (child.exitCode !== null || child.signalCode !== null) return String(child.exitCode ?? child.signalCode);
  const gone = new Promise<string>((resolve) => child.once('exit', (code, sig) => resolve(String(code ?? sig))));
  try {
    process.kill(child.pid!, 'SIGTERM');
  } catch {
    // gone already
  }
  const t = setTimeout(() => {
    try {
      process.kill(child.pid!, 'SIGKILL');
    } catch {
      // gone already
    }
  }, 10_000);
  const how = await gone;
  clearTimeout(t);
  return how;
}

function tempDir(t: import('ava').ExecutionContext, prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function vmConfig(dir: string, extra: Partial<DaemonConfig> = {}): DaemonConfig {
  return { vms: [{ guestCid: 3, socketPath: join(dir, 'vhost.sock'), udsPath: join(dir, 'vm.vsock') }], forwards: [], ...extra };
}

function listenTcp(): Promise<Server> {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => resolve(s));
  });
}

test('kill -9, then the same flags again: the daemon starts (both stale sockets removed, said so) and serves', async (t) => {
  const dir = tempDir(t, 'vsock-restart-');
  const sock = join(dir, 'vhost.sock');
  const uds = join(dir, 'vm.vsock');
  const args = ['--vm', `guest-cid=3,socket=${sock},uds-path=${uds}`, '--metrics', '127.0.0.1:0'];
  const first = spawnDaemon(args, sock);
  t.teardown(() => stop(first.child));
  await first.ready;
  process.kill(first.child.pid!, 'SIGKILL');
  await new Promise((r) => first.child.once('exit', r));
  t.true(existsSync(uds), 'kill -9 leaves the hybrid socket file');
  t.true(existsSync(sock), 'and the vhost-user one');
  const second = spawnDaemon(args, sock);
  let stderr = '';
  second.child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  t.teardown(() => stop(second.child));
  await second.ready;
  t.regex(stderr, new RegExp(`warn  \\[cid 3\\] hybrid vsock: removed the stale socket ${uds.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} \\(nothing was listening on it\\)`));
  t.regex(stderr, /warn  \[cid 3\] vhost-user: removed the stale socket .*vhost\.sock/);
  // It serves: the hybrid socket answers (the VM is not attached: refused at once).
  const { line, socket } = await hybridConnectLine(uds, 80);
  socket.destroy();
  t.regex(line, /^ERR ENOTCONN VM not attached \(guest CID 3: no front end connected, or its vsock driver has not started the device\)$/);
  t.is(await stop(second.child), '0');
  t.false(existsSync(uds), 'a clean stop removes the socket files');
});

test("a live daemon's sockets are never taken over; the second daemon says which path and why", async (t) => {
  const dir = tempDir(t, 'vsock-live-');
  const a = await startDaemon(vmConfig(dir), { log: () => {} });
  t.teardown(() => a.close());
  const other = join(dir, 'other');
  const sameUds = { vms: [{ guestCid: 4, socketPath: `${other}.sock`, udsPath: join(dir, 'vm.vsock') }], forwards: [] };
  await t.throwsAsync(startDaemon(sameUds, { log: () => {} }), {
    code: 'ERR_VSOCK_SOCKET_IN_USE',
    message: `hybrid vsock socket (uds-path) ${join(dir, 'vm.vsock')}: another process is listening there (a daemon already running?); it is left alone`,
  } as never);
  const sameSocket = { vms: [{ guestCid: 4, socketPath: join(dir, 'vhost.sock'), udsPath: `${other}.vsock` }], forwards: [] };
  await t.throwsAsync(startDaemon(sameSocket, { log: () => {} }), { message: `vhost-user socket ${join(dir, 'vhost.sock')}: another process is listening there (a daemon already running?); it is left alone` });
  t.false(existsSync(`${other}.vsock`), 'the failed start closed what it had opened');
  // The first daemon still owns and serves both.
  const { line, socket } = await hybridConnectLine(join(dir, 'vm.vsock'), 80);
  socket.destroy();
  t.regex(line, /^ERR ENOTCONN/);
  const fe = VhostUserFrontend.connect(join(dir, 'vhost.sock'));
  fe.send(Request.GET_FEATURES);
  t.is((await fe.readReply()).request, Request.GET_FEATURES);
  fe.socket.close();
});

test('a regular file where a socket should be is never deleted: refused, naming it', async (t) => {
  const dir = tempDir(t, 'vsock-file-');
  for (const [which, path, what] of [
    ['uds-path', join(dir, 'vm.vsock'), 'hybrid vsock socket (uds-path)'],
    ['socket', join(dir, 'vhost.sock'), 'vhost-user socket'],
  ] as const) {
    writeFileSync(path, 'precious data\n');
    await t.throwsAsync(startDaemon(vmConfig(dir), { log: () => {} }), {
      message: `${what} ${path}: the path exists and is a regular file, not a socket; it is left alone (remove it or choose another path)`,
    }, which);
    t.is(readFileSync(path, 'utf8'), 'precious data\n', `${which}: the file is intact`);
    rmSync(path);
  }
});

test('every socket error names its path or address: missing folders, addresses in use', async (t) => {
  const dir = tempDir(t, 'vsock-paths-');
  const missing = join(dir, 'no', 'such');
  await t.throwsAsync(startDaemon({ vms: [{ guestCid: 3, socketPath: join(dir, 'v.sock'), udsPath: join(missing, 'vm.vsock') }], forwards: [] }, { log: () => {} }), {
    message: `hybrid vsock socket (uds-path) ${join(missing, 'vm.vsock')}: the folder ${missing} does not exist`,
  });
  await t.throwsAsync(startDaemon({ vms: [{ guestCid: 3, socketPath: join(missing, 'v.sock'), udsPath: null }], forwards: [] }, { log: () => {} }), {
    message: `vhost-user socket ${join(missing, 'v.sock')}: the folder ${missing} does not exist`,
  });
  const busy = await listenTcp();
  t.teardown(() => new Promise<void>((r) => busy.close(() => r())));
  const port = (busy.address() as { port: number }).port;
  await t.throwsAsync(startDaemon(vmConfig(dir, { forwards: [{ listenHost: '127.0.0.1', listenPort: port, guestCid: 3, guestPort: 80 }] }), { log: () => {} }), {
    message: `tcp forward 127.0.0.1:${port}: already in use by another process`,
  });
  await t.throwsAsync(startDaemon(vmConfig(dir, { metrics: { host: '127.0.0.1', port, allowRemote: false } }), { log: () => {} }), {
    message: `metrics 127.0.0.1:${port}: already in use by another process`,
  });
  t.false(existsSync(join(dir, 'vm.vsock')), 'each failed start closed its sockets');
  // The same through the command line: status 1 and the message.
  const { main } = await import('../drivers/virtio-vsock/daemon/cli.js');
  let err = '';
  t.is(await main(['--vm', `guest-cid=3,socket=${join(missing, 'v.sock')}`], { stdout: () => {}, stderr: (s) => (err += s) }), 1);
  t.regex(err, new RegExp(`vhost-user-vsock: cannot start: vhost-user socket ${join(missing, 'v.sock').replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: the folder .* does not exist`));
});

test('while the VM is not attached: hybrid CONNECT gets ERR ENOTCONN and a TCP forward client a reset, at once; attached: served; detached: refused again', async (t) => {
  const fx = await startRawGuestDaemon('vsock-attach-', (dir) => vmConfig(dir, { forwards: [{ listenHost: '127.0.0.1', listenPort: 0, guestCid: 3, guestPort: 80 }] }));
  t.teardown(() => fx.close());
  const uds = join(fx.dir, 'vm.vsock');
  const fwdPort = fx.daemon.forwards[0]!.address()!.port;
  const tcpOutcome = (): Promise<string> =>
    new Promise((resolve) => {
      const c = connect({ host: '127.0.0.1', port: fwdPort });
      c.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
      c.on('close', () => resolve('close'));
      c.on('data', () => resolve('data'));
    });
  const before = await hybridConnectLine(uds, 80);
  before.socket.destroy();
  t.regex(before.line, /^ERR ENOTCONN VM not attached/);
  t.is(await tcpOutcome(), 'ECONNRESET');
  t.regex(await fx.waitLog(/tcp forward 127\.0\.0\.1:\d+ -> guest port 80: VM not attached: client reset/), /info  \[cid 3\]/);
  // Attached: the same connects reach the guest.
  const drv = fx.attach(3);
  t.regex(await fx.waitLog(/VM attached/), /info  \[cid 3\] VM attached: the guest driver started the device/);
  const accepted = acceptOnGuest(drv, 80);
  const ok = await hybridConnectLine(uds, 80);
  await accepted;
  t.regex(ok.line, /^OK \d+$/);
  ok.socket.destroy();
  // Detached again (guest reset): refused at once again.
  await fx.detach(3);
  t.regex(await fx.waitLog(/VM detached/), /info  \[cid 3\] VM detached/);
  const after = await hybridConnectLine(uds, 80);
  after.socket.destroy();
  t.regex(after.line, /^ERR ENOTCONN/);
  t.is(fx.daemon.vms.get(3)!.hybrid!.stats.refused.notAttached, 2);
  t.is(fx.daemon.forwards[0]!.stats.refused.notAttached, 1);
});

test('a vhost-user front end that sends requests without reading replies is dropped with a message; the daemon serves the next one', async (t) => {
  const dir = tempDir(t, 'vsock-noread-');
  const logs: string[] = [];
  const d = await startDaemon(vmConfig(dir), { log: (l) => logs.push(l) });
  t.teardown(() => d.close());
  const sock = join(dir, 'vhost.sock');
  const rude = connect({ path: sock });
  rude.pause(); // never reads
  rude.on('error', () => {});
  const one = encodeMessage(Request.GET_FEATURES, VERSION);
  const burst = Buffer.concat(Array.from({ length: 200_000 }, () => one));
  const closed = new Promise<void>((r) => rude.once('close', () => r()));
  rude.write(burst);
  await closed;
  const line = logs.find((l) => /front end dropped/.test(l));
  t.truthy(line, logs.join('\n'));
  t.regex(line!, /error \[cid 3\] vhost-user .*vhost\.sock: front end dropped: ERR_VHOST_USER_NOT_READING: the front-end sends requests but does not read the replies: \d+ bytes of replies wait \(at most 65536\); dropped/);
  // The next front end is served.
  const fe = VhostUserFrontend.connect(sock);
  fe.send(Request.GET_FEATURES);
  t.is((await fe.readReply()).request, Request.GET_FEATURES);
  fe.socket.close();
});
