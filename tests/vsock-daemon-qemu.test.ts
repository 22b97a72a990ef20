// The vhost-user-vsock daemon (startDaemon with the real kernel/vhost-user server)
// against QEMU 7.2 and a stock Linux 6.1 guest using its own virtio-vsock driver:
// hybrid Unix socket both ways, RST when nothing listens at <uds-path>_P, TCP forward,
// and 1 MiB echoed through the forward (credit flow with Linux in both directions).
import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startLinuxGuest, type LinuxGuest } from '../appliance/qemu/start.js';
import { parseArgs, type DaemonConfig } from '../drivers/virtio-vsock/daemon/config.js';
import { startDaemon } from '../drivers/virtio-vsock/daemon/daemon.js';

const SAFETY_TIMEOUT_MS = 10 * 60 * 1000; // kills a stuck QEMU; not an assertion

/** Sends `data` (then ends, unless keepOpen) on a fresh socket and collects the reply until `done` or end. */
function exchange(make: () => Socket, data: Buffer, done?: (got: Buffer) => boolean): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const s = make();
    const parts: Buffer[] = [];
    let n = 0;
    s.on('data', (c: Buffer) => {
      parts.push(c);
      n += c.length;
      if (done?.(Buffer.concat(parts, n))) s.end();
    });
    s.on('end', () => resolve(Buffer.concat(parts)));
    s.on('error', reject);
    s.write(data);
    if (!done) s.end();
  });
}

/** Retries `attempt` until `ok` (the guest's listener may not be up yet). */
async function retry<T>(attempt: () => Promise<T>, ok: (v: T) => boolean, tries = 60): Promise<T> {
  let last: T | undefined;
  for (let i = 0; i < tries; i++) {
    try {
      last = await attempt();
      if (ok(last)) return last;
    } catch {
      // not yet
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  return last as T;
}

test.serial('daemon with a Linux guest: hybrid both ways, RST when nothing listens, TCP forward, 1 MiB echo', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vsock-daemon-qemu-'));
  const socket = join(dir, 'vhost.sock');
  const uds = join(dir, 'vm.vsock');
  const { config } = parseArgs(['--vm', `guest-cid=3,socket=${socket},uds-path=${uds}`, '--forward', '127.0.0.1:1=3:6000', '--forward', '127.0.0.1:2=3:6001']) as {
    help: false;
    config: DaemonConfig;
  };
  for (const f of config.forwards) f.listenPort = 0;
  const logs: string[] = [];
  const daemon = await startDaemon(config, { log: (m) => logs.push(m) });
  const hostApp = createServer({ allowHalfOpen: true }, (s) => {
    s.on('data', (d: Buffer) => s.write(Buffer.concat([Buffer.from('host:'), d])));
    s.on('end', () => s.end());
    s.on('error', () => {});
  });
  await new Promise<void>((r) => hostApp.listen(`${uds}_5000`, r));
  let g: LinuxGuest | null = null;
  t.teardown(async () => {
    if (g?.qemu.running) await g.qemu.stop();
    await new Promise<void>((r) => hostApp.close(() => r()));
    await daemon.close();
    rmSync(dir, { recursive: true, force: true });
    if (!t.passed) t.log(logs.join('\n'));
  });
  g = await startLinuxGuest({ launch: { vhostUserVsock: { socket }, timeoutMs: SAFETY_TIMEOUT_MS } });

  // Guest -> host: CID 2 port 5000 reaches <uds>_5000.
  t.deepEqual(await g.shell.run('echo hi | socat -t 5 - VSOCK-CONNECT:2:5000', { timeoutMs: 60000 }), { output: 'host:hi', status: 0 });
  // Nothing at <uds>_5999: RST, socat fails (at once, not after a connect timeout).
  const refused = await g.shell.run('echo hi | socat -t 5 - VSOCK-CONNECT:2:5999; echo status=$?', { timeoutMs: 60000 });
  t.regex(refused.output, /Connection reset by peer|Connection refused/);
  t.regex(refused.output, /status=1$/);

  // Host -> guest through the hybrid socket: CONNECT 6000.
  await g.shell.runBackground("socat -t 30 VSOCK-LISTEN:6000,reuseaddr,fork SYSTEM:'tr a-z A-Z'");
  await g.shell.runBackground('socat -t 30 VSOCK-LISTEN:6001,reuseaddr,fork EXEC:cat');
  const viaUds = await retry(
    () => exchange(() => connect({ path: uds, allowHalfOpen: true }), Buffer.from('CONNECT 6000\nhello hybrid\n')),
    (b) => b.toString().startsWith('OK '),
  );
  t.regex(viaUds.toString(), /^OK \d+\nHELLO HYBRID\n$/);

  // TCP forward 127.0.0.1:<port> -> 3:6000.
  const fwdPort = daemon.forwards[0]!.address()!.port;
  const viaTcp = await exchange(() => connect({ host: '127.0.0.1', port: fwdPort, allowHalfOpen: true }), Buffer.from('hello tcp\n'));
  t.is(viaTcp.toString(), 'HELLO TCP\n');

  // 1 MiB through the forward to cat and back.
  const big = randomBytes(1 << 20);
  const echoPort = daemon.forwards[1]!.address()!.port;
  const back = await exchange(() => connect({ host: '127.0.0.1', port: echoPort, allowHalfOpen: true }), big, (got) => got.length >= big.length);
  t.is(back.length, big.length);
  t.is(createHash('sha256').update(back).digest('hex'), createHash('sha256').update(big).digest('hex'));

  const dev = daemon.devices.get(3)!;
  t.is(dev.stats.dropped.creditViolation, 0);
  t.is(dev.stats.dropped.protocolViolation, 0);
  t.is(dev.stats.dropped.lengthMismatch, 0);
  await g.shell.poweroff();
});
