// Boots the stock-Linux guest once and drives its shell over the serial console.
import test from 'ava';
import { startLinuxGuest, type LinuxGuest } from '../appliance/qemu/start.js';
import { GuestShellError } from '../appliance/qemu/guest-shell.js';

let g: LinuxGuest | undefined;
let bootError: unknown;

test.before(async (t) => {
  const t0 = Date.now();
  try {
    g = await startLinuxGuest({ launch: { timeoutMs: 10 * 60 * 1000 } }); // safety net, not an assertion
    t.log(`image ${g.image.initramfs.path}: ${(g.image.initramfs.size / 1e6).toFixed(1)} MB, ${g.image.initramfs.cached ? 'cached' : 'built'} in ${g.image.initramfs.buildMs} ms`);
    t.log(`QEMU start -> shell ready: ${g.bootMs} ms (build + boot: ${Date.now() - t0} ms)`);
  } catch (err) {
    bootError = err;
  }
});

test.after.always(async () => {
  if (g?.qemu.running) await g.qemu.stop();
});

const guest = (): LinuxGuest => {
  if (!g) throw bootError instanceof Error ? bootError : new Error(String(bootError));
  return g;
};

test.serial('uname -r is the Debian cloud kernel the image was built from', async (t) => {
  const { shell, image } = guest();
  const r = await shell.run('uname -r');
  t.is(r.status, 0);
  t.is(r.output, image.kernelVersion);
  t.regex(r.output, /cloud-amd64$/);
});

test.serial('the vsock, virtio_pci and virtiofs modules are loaded (with dependencies)', async (t) => {
  const { shell, image } = guest();
  const r = await shell.run('cut -d" " -f1 /proc/modules');
  t.is(r.status, 0);
  const loaded = r.output.split('\n');
  for (const m of ['virtio_pci', 'vsock', 'vmw_vsock_virtio_transport_common', 'vmw_vsock_virtio_transport', 'fuse', 'virtiofs']) {
    t.true(loaded.includes(m), `${m} missing from /proc/modules:\n${r.output}`);
  }
  t.deepEqual([...loaded].sort(), image.initramfs.modules.map((m) => m.name).sort());
  t.is((await shell.run('test -c /dev/vsock')).status, 0, '/dev/vsock exists');
});

test.serial('exit status, stderr, quoting and multi-line commands', async (t) => {
  const { shell } = guest();
  t.deepEqual(await shell.run('exit 42'), { output: '', status: 42 });
  t.deepEqual(await shell.run('false'), { output: '', status: 1 });
  t.deepEqual(await shell.run(`echo "it's"; echo err >&2`), { output: "it's\nerr", status: 0 });
  t.deepEqual(await shell.run('printf no-newline'), { output: 'no-newline', status: 0 });
  t.deepEqual(await shell.run('for i in 1 2 3\ndo echo $i\ndone'), { output: '1\n2\n3', status: 0 });
  const bad = await shell.run('echo "unterminated');
  t.not(bad.status, 0, 'a syntax error fails that command only');
  t.deepEqual(await shell.run('echo still here'), { output: 'still here', status: 0 });
});

test.serial('socat from Debian runs with its libraries', async (t) => {
  const { shell } = guest();
  const r = await shell.run('socat -V');
  t.is(r.status, 0, r.output);
  t.regex(r.output, /socat version 1\.7/);
  const echo = await shell.run('echo ping | socat - EXEC:cat');
  t.deepEqual(echo, { output: 'ping', status: 0 });
});

test.serial('background commands and the guest-side timeout', async (t) => {
  const { shell } = guest();
  const job = await shell.runBackground('echo started; sleep 600');
  t.true(job.pid > 1);
  t.is((await shell.run(`kill -0 ${job.pid}`)).status, 0, 'running');
  t.is((await shell.run(`kill ${job.pid}`)).status, 0);
  const log = await shell.run(`cat ${job.logFile}`);
  t.is(log.output, 'started');
  const killed = await shell.run('sleep 600', { timeoutMs: 1000 });
  t.is(killed.status, 137, 'killed by the guest-side timeout');
  await t.throwsAsync(shell.run('x'.repeat(10000)), { instanceOf: GuestShellError, message: /too long/ });
});

test.serial('poweroff ends QEMU', async (t) => {
  const { shell, qemu } = guest();
  const exit = await shell.poweroff();
  t.false(qemu.running);
  t.is(exit.qemuCode, 0);
  t.false(exit.timedOut);
  t.false(exit.stopped, 'the guest powered off by itself');
  t.throws(() => process.kill(qemu.pid, 0), { code: 'ESRCH' }, 'the QEMU process is gone');
  await t.throwsAsync(shell.run('true'), { instanceOf: GuestShellError, message: /not running/ });
});
