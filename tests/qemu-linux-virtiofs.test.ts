// The stock-Linux guest with a virtio-fs device served by Debian's C virtiofsd: the
// launcher's vhost-user-fs wiring (shared memfd RAM) and the guest's own virtiofs
// driver, end to end. One boot.
import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startLinuxGuest, type LinuxGuest } from '../appliance/qemu/start.js';

const VIRTIOFSD = '/usr/lib/qemu/virtiofsd';
const dir = mkdtempSync(join(tmpdir(), 'tsv-virtiofs-'));
const share = join(dir, 'share');
const socket = join(dir, 'fs.sock');
let daemon: ChildProcess | undefined;
let g: LinuxGuest | undefined;

test.after.always(async () => {
  if (g?.qemu.running) await g.qemu.stop();
  if (daemon !== undefined && daemon.exitCode === null) daemon.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

async function waitForSocket(path: string, d: ChildProcess): Promise<void> {
  // Polls for the socket virtiofsd creates; fails as soon as the daemon exits.
  for (;;) {
    if (existsSync(path)) return;
    if (d.exitCode !== null) throw new Error(`virtiofsd exited with ${d.exitCode} before creating ${path}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

(existsSync(VIRTIOFSD) ? test.serial : test.skip)('mount -t virtiofs reads host files through virtiofsd', async (t) => {
  mkdirSync(join(share, 'sub'), { recursive: true });
  writeFileSync(join(share, 'hello.txt'), 'hello from the host\n');
  writeFileSync(join(share, 'sub', 'big.bin'), Buffer.alloc(300 * 1024, 0x5a));
  daemon = spawn(VIRTIOFSD, [`--socket-path=${socket}`, '-o', `source=${share}`, '-o', 'sandbox=chroot'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let daemonErr = '';
  daemon.stderr!.on('data', (b: Buffer) => (daemonErr = (daemonErr + b.toString()).slice(-4000)));
  await waitForSocket(socket, daemon);

  g = await startLinuxGuest({ launch: { virtiofs: { socket, tag: 'hostshare' }, timeoutMs: 10 * 60 * 1000 } });
  t.log(`QEMU start -> shell ready: ${g.bootMs} ms`);
  const { shell } = g;
  const mount = await shell.run('mkdir -p /mnt/host && mount -t virtiofs hostshare /mnt/host');
  t.is(mount.status, 0, `${mount.output}\nvirtiofsd: ${daemonErr}`);
  t.deepEqual(await shell.run('cat /mnt/host/hello.txt'), { output: 'hello from the host', status: 0 });
  t.deepEqual(await shell.run('wc -c < /mnt/host/sub/big.bin'), { output: String(300 * 1024), status: 0 });
  t.deepEqual(await shell.run('cat /sys/bus/virtio/devices/*/device'), { output: '0x001a', status: 0 }, 'one virtio device: fs (26)');
  const exit = await shell.poweroff();
  t.is(exit.qemuCode, 0);
});
