// `tsvirtio build examples/file-server/main.ts -o DIR --tag share` writes the kernel,
// the root file system and launch.sh; then, as a user would: our vhost-user-vsock daemon
// as a process (npx vhost-user-vsock --vm ...), virtiofsd on the example's folder, and
// `sh launch.sh VSOCK_SOCKET FS_SOCKET` (plain qemu-system-x86_64, one boot on microvm);
// a host program talks to the file server through the daemon's hybrid socket
// (`CONNECT 7000`). Everything is stopped by pid, even when a test fails.
import test from 'ava';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { qemuAvailable } from '../appliance/qemu/launch.js';
import { spawnVirtiofsd } from '../appliance/qemu/virtiofsd.js';
import { spawnDaemon } from './support/daemon-process.js';
import { ROOT, TSVIRTIO, alive } from './support/tsvirtio-run.js';

const VIRTIOFSD = '/usr/lib/qemu/virtiofsd';
const FILES = join(ROOT, 'examples', 'file-server', 'files');
const runnable = existsSync(join(ROOT, 'dist', 'bundles', 'runtime.js')) && qemuAvailable() && existsSync(VIRTIOFSD);
const serial = runnable ? test.serial : test.serial.skip;

let dir = '';
const children: ChildProcess[] = [];

test.before(() => {
  dir = mkdtempSync(join(tmpdir(), 'tsvirtio-build-'));
});

test.after.always(async () => {
  for (const c of children.reverse()) {
    if (c.pid !== undefined && c.exitCode === null && c.signalCode === null && alive(c.pid)) {
      const gone = new Promise((r) => c.once('exit', r));
      c.kill('SIGKILL');
      await gone;
    }
  }
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function runCommand(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, [TSVIRTIO, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, TSVIRTIO_NO_BUILD: '1' } });
    children.push(c);
    let stdout = '';
    let stderr = '';
    c.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    c.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    c.once('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

/** Through the hybrid socket: `CONNECT <port>\n`, `OK <n>\n`, then the request; everything until the guest closes. */
function askViaHybrid(uds: string, port: number, line: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = createConnection(uds, () => s.write(`CONNECT ${port}\n`));
    let buf = Buffer.alloc(0);
    let connected = false;
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (!connected) {
        const nl = buf.indexOf(0x0a);
        if (nl < 0) return;
        const head = buf.subarray(0, nl).toString();
        if (!head.startsWith('OK ')) return reject(new Error(`hybrid socket answered ${JSON.stringify(head)}`));
        connected = true;
        buf = buf.subarray(nl + 1);
        s.write(`${line}\n`);
      }
    });
    s.on('end', () => {
      s.end();
      resolve(buf.toString());
    });
    s.on('error', reject);
  });
}

serial('build writes vmlinux, rootfs.squashfs and an executable launch.sh naming its sockets', async (t) => {
  const r = await runCommand(['build', 'examples/file-server/main.ts', '-o', join(dir, 'out'), '--tag', 'share']);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /^wrote .*vmlinux, .*rootfs\.squashfs, .*launch\.sh \(microvm, [\d.]+ MB, 128 MiB\)\n/);
  for (const f of ['vmlinux', 'rootfs.squashfs', 'launch.sh']) t.true(existsSync(join(dir, 'out', f)), f);
  t.true((statSync(join(dir, 'out', 'launch.sh')).mode & 0o111) !== 0);
  const script = readFileSync(join(dir, 'out', 'launch.sh'), 'utf8');
  t.regex(script, /# usage: \.\/launch\.sh VSOCK_SOCKET FS_SOCKET_1\n/);
  t.regex(script, /-device vhost-user-fs-device,chardev=fs0,tag=share/);
});

serial('launch.sh boots the program against our daemon (a process) and virtiofsd; a host program gets the shared files', async (t) => {
  const launch = join(dir, 'out', 'launch.sh');
  t.true(existsSync(launch), 'the build test wrote it');
  const vhost = join(dir, 'app.vhost');
  const uds = join(dir, 'app.vsock');
  const fsSocket = join(dir, 'app.fs');
  const daemon = spawnDaemon(['--vm', `guest-cid=3,socket=${vhost},uds-path=${uds}`], vhost);
  children.push(daemon.child);
  const fsd = spawnVirtiofsd({ socketPath: fsSocket, source: FILES });
  children.push(fsd.child);
  await Promise.all([daemon.ready, fsd.ready]);
  // The script execs QEMU: its pid is QEMU's. A process group of its own, as from a terminal.
  const qemu = spawn('sh', [launch, vhost, fsSocket], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  children.push(qemu);
  let consoleText = '';
  qemu.stdout!.on('data', (d: Buffer) => (consoleText += d.toString()));
  qemu.stderr!.on('data', (d: Buffer) => (consoleText += d.toString()));
  const exited = new Promise<number | null>((r) => qemu.once('exit', (code) => r(code)));
  await new Promise<void>((resolve, reject) => {
    const check = (): void => {
      if (/file-server: serving the share "share" on vsock port 7000/.test(consoleText)) resolve();
    };
    qemu.stdout!.on('data', check);
    void exited.then((code) => reject(new Error(`launch.sh exited (${code}) before the program served:\n${consoleText}`)));
  });
  t.regex(consoleText, /tsvirtio-stage: program-start /);
  t.is(await askViaHybrid(uds, 7000, 'hello.txt'), readFileSync(join(FILES, 'hello.txt'), 'utf8'));
  t.is(await askViaHybrid(uds, 7000, 'notes'), 'data.json\nreadme.md\n');
  qemu.kill('SIGTERM');
  await exited;
  t.false(alive(qemu.pid!), 'QEMU still running');
});
