// The launcher's argument building and errors; no guest is booted here.
import test from 'ava';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { QemuError, findQemu, launchQemu, qemuArgs } from '../appliance/qemu/launch.js';
import { initArgs, kernelCommandLine } from '../appliance/image/guest.js';

const dir = mkdtempSync(join(tmpdir(), 'tsv-launch-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

test('a missing QEMU says what to install', (t) => {
  const err = t.throws(() => findQemu('qemu-system-does-not-exist'), { instanceOf: QemuError });
  t.is(err?.code, 'ERR_QEMU_MISSING');
  t.regex(err?.message ?? '', /apt-get install -y qemu-system-x86/);
});

test('arguments: q35, shared memfd RAM, kernel/initrd/append, serial on stdio, vhost-user devices', (t) => {
  const args = qemuArgs({
    kernel: '/k',
    initrd: '/i',
    append: 'console=ttyS0',
    memoryMiB: 512,
    vhostUserVsock: { socket: '/tmp/a,b.sock' },
    virtiofs: { socket: '/tmp/fs.sock', tag: 'site' },
    extraArgs: ['-d', 'guest_errors'],
  });
  const s = args.join(' ');
  t.regex(s, /-M q35 -cpu max -m 512M/);
  t.regex(s, /-object memory-backend-memfd,id=mem,size=512M,share=on -machine q35,memory-backend=mem/);
  t.regex(s, /-kernel \/k -initrd \/i -append console=ttyS0/);
  t.regex(s, /-nographic -nodefaults -no-reboot/);
  t.regex(s, /-chardev socket,id=vsock0,path=\/tmp\/a,,b\.sock -device vhost-user-vsock-pci,chardev=vsock0( |$)/);
  t.regex(s, /-chardev socket,id=fs0,path=\/tmp\/fs\.sock -device vhost-user-fs-pci,chardev=fs0,tag=site/);
  t.deepEqual(args.slice(-2), ['-d', 'guest_errors']);
  t.throws(() => qemuArgs({ kernel: '/k', initrd: '/i', append: '', virtiofs: { socket: '/s', tag: 'a,b' } }), { instanceOf: QemuError });
});

test('packed: the vhost-user devices get packed=on (virtio 1.2 2.8), on both machines; without it QEMU keeps its default', (t) => {
  const microvm = qemuArgs({ machine: 'microvm', kernel: '/k', rootfs: '/r', append: '', vhostUserVsock: { socket: '/v', packed: true }, virtiofs: { socket: '/f', tag: 'site', packed: true } }).join(' ');
  t.regex(microvm, /-device vhost-user-vsock-device,chardev=vsock0,packed=on/);
  t.regex(microvm, /-device vhost-user-fs-device,chardev=fs0,tag=site,packed=on/);
  const q35 = qemuArgs({ kernel: '/k', initrd: '/i', append: '', vhostUserVsock: { socket: '/v', packed: true }, virtiofs: { socket: '/f', tag: 'site' } }).join(' ');
  t.regex(q35, /-device vhost-user-vsock-pci,chardev=vsock0,packed=on/);
  t.notRegex(q35, /vhost-user-fs-pci[^ ]*packed/);
});

test('launch refuses missing files and back-end sockets before starting QEMU', (t) => {
  const k = join(dir, 'vmlinuz');
  writeFileSync(k, '');
  t.throws(() => launchQemu({ kernel: join(dir, 'nope'), initrd: k, append: '' }), { message: /kernel not found/ });
  t.throws(() => launchQemu({ kernel: k, initrd: k, append: '', vhostUserVsock: { socket: join(dir, 'none.sock') } }), {
    message: /start the back end before QEMU/,
  });
});

test('init arguments are numbered kernel parameters; spaces are quoted; quotes are refused', (t) => {
  t.is(initArgs([]), '');
  t.is(initArgs(['--port=5000', 'two words', '']), 'TSVIRTIO_ARG_0=--port=5000 TSVIRTIO_ARG_1="two words" TSVIRTIO_ARG_2=""');
  t.throws(() => initArgs(['a"b']));
  t.throws(() => initArgs(Array.from({ length: 25 }, () => 'x')), { message: /at most 24/ });
  t.is(kernelCommandLine(['console=ttyS0'], ['x']), 'console=ttyS0 TSVIRTIO_ARG_0=x');
  t.throws(() => kernelCommandLine(['x'.repeat(3000)]), { message: /too long/ });
});
