// Saved VM states on the host, without QEMU running (appliance/run/vm-snapshot.ts,
// appliance/qemu/launch.ts `restorable`, the timeline's epochs in boot-stages.ts): the
// restorable machine's arguments and hotplug list, the kernel arguments, the state's cache
// key (what changes it and what must not), where a restored or saved guest's stages land
// on the host's clock, and a QMP connection that QEMU closes as it exits. Booting, saving
// and restoring are in vm-snapshot-qemu.test.ts.
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { hotplugDevices, qemuArgs, shellQuote, type QemuExit, type QemuOptions } from '../appliance/qemu/launch.js';
import { BootTimeline, RESTORE_WATERFALL_POINTS, SAVE_WATERFALL_POINTS } from '../appliance/run/boot-stages.js';
import { QmpUnavailable, connectRestorableQmp, restorableKernelArgs, vmStatePlan } from '../appliance/run/vm-snapshot.js';

const dir = mkdtempSync(join(tmpdir(), 'tsvirtio-vmstate-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

const kernel = join(dir, 'vmlinux');
const rootfs = join(dir, 'root.sqfs');
writeFileSync(kernel, Buffer.alloc(3 << 20, 1));
writeFileSync(rootfs, Buffer.alloc(5 << 20, 2));
const fakeQemu = join(dir, 'qemu-system-x86_64');
writeFileSync(fakeQemu, 'qemu');

function restorable(socketDir: string, append = 'console=ttyS0 tsc_early_khz=2596142 TSVIRTIO_ARG_0=--port=80', incoming?: string): QemuOptions {
  return {
    machine: 'microvm',
    kernel,
    rootfs,
    append: restorableKernelArgs(append),
    memoryMiB: 128,
    vhostUserVsock: { socket: join(socketDir, 'vsock.sock') },
    virtiofs: [{ socket: join(socketDir, 'fs.sock'), tag: 'site' }],
    restorable: { qmpSocket: join(socketDir, 'qmp.sock'), ...(incoming ? { incoming } : {}) },
  };
}

test('restorableKernelArgs: the local APIC timer, native PCIe hotplug and the snapshot point, before the program\'s arguments', (t) => {
  const cold = 'console=ttyS0 quiet nolapic_timer acpi=off tsc_early_khz=2596142 hugepages=10 TSVIRTIO_ARG_0=--drivers=ours TSVIRTIO_ARG_1=--port=80';
  const warm = restorableKernelArgs(cold);
  t.is(warm, 'console=ttyS0 quiet tsc_early_khz=2596142 hugepages=10 pcie_ports=native tsvirtio.snapshot=1 TSVIRTIO_ARG_0=--drivers=ours TSVIRTIO_ARG_1=--port=80');
  t.is(restorableKernelArgs(warm), warm, 'applying it twice changes nothing');
  t.is(restorableKernelArgs('console=ttyS0 pcie_ports=compat'), 'console=ttyS0 pcie_ports=native tsvirtio.snapshot=1');
  // A quoted program argument keeps its inner spacing.
  t.is(restorableKernelArgs('quiet acpi=off TSVIRTIO_ARG_0="two  words" TSVIRTIO_ARG_1=x'), 'quiet pcie_ports=native tsvirtio.snapshot=1 TSVIRTIO_ARG_0="two  words" TSVIRTIO_ARG_1=x');
});

test('a restorable microvm: ACPI and PCIe, an empty root port and a chardev per vhost-user device, QMP, the state to load', (t) => {
  const args = qemuArgs(restorable('/run/s', undefined, "/cache/it's here.state"));
  const after = (flag: string): string[] => args.flatMap((a, i) => (a === flag ? [args[i + 1]!] : []));
  t.deepEqual(after('-M'), ['microvm,acpi=on,pcie=on,memory-backend=mem']);
  t.deepEqual(after('-chardev').slice(1), ['socket,id=vsock0,path=/run/s/vsock.sock', 'socket,id=fs0,path=/run/s/fs.sock']);
  t.deepEqual(
    after('-device').filter((d) => !d.startsWith('virtio-blk')),
    ['pcie-root-port,id=tsv-hp0,chassis=1,slot=0', 'pcie-root-port,id=tsv-hp1,chassis=2,slot=0'],
    'no vhost-user device on the command line: QEMU would refuse to save or load the VM',
  );
  t.deepEqual(after('-qmp'), ['unix:/run/s/qmp.sock,server=on,wait=off']);
  const [incoming] = after('-incoming');
  t.true(incoming!.startsWith('exec:cat '));
  // QEMU runs the exec: command through /bin/sh: the quoted path is one word, as given.
  t.is(execFileSync('/bin/sh', ['-c', `printf %s ${incoming!.slice('exec:cat '.length)}`], { encoding: 'utf8' }), "/cache/it's here.state");
  t.deepEqual(hotplugDevices(restorable('/run/s')), [
    { driver: 'vhost-user-vsock-pci', id: 'vsock0', chardev: 'vsock0', bus: 'tsv-hp0' },
    { driver: 'vhost-user-fs-pci', id: 'fs0', chardev: 'fs0', bus: 'tsv-hp1', tag: 'site' },
  ]);
  // Not restorable: the devices on virtio-mmio, as before.
  const cold = qemuArgs({ ...restorable('/run/s'), restorable: undefined });
  t.true(cold.includes('microvm,acpi=off,memory-backend=mem'));
  t.true(cold.includes('vhost-user-vsock-device,chardev=vsock0'));
  t.true(cold.includes('vhost-user-fs-device,chardev=fs0,tag=site'));
  t.false(cold.includes('-qmp'));
  t.throws(() => qemuArgs({ machine: 'q35', kernel, initrd: rootfs, append: '', restorable: { qmpSocket: '/q' } }), { message: /needs the microvm machine/ });
});

test('shellQuote: any string comes back from /bin/sh as one word', (t) => {
  for (const s of ['plain', 'two words', "a'b", "''", '$HOME `x` "y" \\ ;&|', '\n']) {
    t.is(execFileSync('/bin/sh', ['-c', `printf %s ${shellQuote(s)}`], { encoding: 'utf8' }), s);
  }
});

test('the state key: per-launch socket folders and the measured TSC rate do not change it; an argument, a file or QEMU does', (t) => {
  const out = join(dir, 'states');
  const plan = (socketDir: string, append?: string, qemu = fakeQemu) => vmStatePlan('appliance', qemuArgs(restorable(socketDir, append)), socketDir, [kernel, rootfs], qemu, out);
  const a = plan('/tmp/tsv-app-aaaa');
  t.regex(a.path, /\/states\/appliance-[0-9a-f]{16}\.state$/);
  t.is(plan('/tmp/tsv-app-bbbb').key, a.key);
  t.is(plan('/tmp/tsv-app-cccc', 'console=ttyS0 tsc_early_khz=2600001 TSVIRTIO_ARG_0=--port=80').key, a.key);
  t.is(vmStatePlan('appliance', qemuArgs(restorable('/tmp/x', undefined, '/some.state')), '/tmp/x', [kernel, rootfs], fakeQemu, out).key, a.key, '-incoming is not part of the key');
  t.not(plan('/tmp/tsv-app-aaaa', 'console=ttyS0 tsc_early_khz=2596142 TSVIRTIO_ARG_0=--port=81').key, a.key, 'a program argument');
  // The image cache touches its files at each use: that must not lose the state.
  utimesSync(rootfs, new Date(), new Date(Date.now() + 5000));
  t.is(plan('/tmp/tsv-app-aaaa').key, a.key);
  // A rebuilt root file system (new content, new inode) does.
  const rebuilt = `${rootfs}.new`;
  writeFileSync(rebuilt, Buffer.alloc(5 << 20, 3));
  copyFileSync(rebuilt, rootfs);
  t.not(plan('/tmp/tsv-app-aaaa').key, a.key);
  const otherQemu = join(dir, 'qemu-other');
  writeFileSync(otherQemu, 'another qemu');
  t.not(plan('/tmp/tsv-app-aaaa', undefined, otherQemu).key, plan('/tmp/tsv-app-aaaa').key);
  t.throws(() => vmStatePlan('a/b', [], '/x', [], fakeQemu, out), { message: /bad VM state name/ });
});

test('timeline of a restored guest: its clock counts from a boot elsewhere; stages land by their arrival', (t) => {
  const tl = new BootTimeline(1000, RESTORE_WATERFALL_POINTS);
  tl.newGuestEpoch();
  tl.markHost('qemu-up', 1040);
  tl.markHost('state-loaded', 1200);
  // The guest's clock reads 1.5 s (its boot that saved the state) when it resumes here.
  t.true(tl.onConsoleLine('tsvirtio-stage: resumed 1.500', 1300));
  tl.onConsoleLine('tsvirtio-stage: hotplugged 1.610', 1412);
  tl.onConsoleLine('tsvirtio-stage: devices-ready 1.800', 1601);
  tl.onConsoleLine('tsvirtio-stage: listening 1.810', 1612);
  tl.markHost('first-response', 1660);
  t.deepEqual(
    tl.waterfall().map((s) => [s.step, Math.round(s.ms)]),
    [
      ['QEMU start', 40],
      ['restore', 160],
      ['resume', 100],
      ['hotplug', 110],
      ['devices', 190],
      ['services', 10],
      ['first response', 50],
    ],
  );
  t.is(tl.at('first-response'), 660);
});

test('timeline of a first start: booted, saved (the guest clock stood still meanwhile), then resumed', (t) => {
  const tl = new BootTimeline(0, SAVE_WATERFALL_POINTS);
  tl.markHost('front-end-connected', 50);
  tl.onConsoleLine('tsvirtio-stage: init 0.200', 330);
  tl.onConsoleLine('tsvirtio-stage: dma-ready 1.200', 1330);
  tl.onConsoleLine('tsvirtio-stage: snapshot-ready 1.210', 1340);
  tl.markHost('state-saved', 1900);
  tl.newGuestEpoch();
  // 0.56 s of saving later, the guest's clock goes on from 1.210.
  tl.onConsoleLine('tsvirtio-stage: resumed 1.240', 1930);
  tl.onConsoleLine('tsvirtio-stage: devices-ready 1.600', 2290);
  t.is(tl.at('kernel'), 130);
  t.is(tl.at('dma-ready'), 1330);
  t.is(tl.at('resumed'), 1930, 'placed by the epoch after the save, not by the kernel start');
  t.is(tl.at('devices-ready'), 2290);
  const steps = tl.waterfall().map((s) => s.step);
  t.deepEqual(steps, ['QEMU start', 'firmware', 'kernel', 'DMA memory', 'save state', 'resume', 'devices']);
});

/** A QMP socket that greets, then closes on the first command, as an exiting QEMU did. */
async function closingQmpServer(name: string): Promise<{ path: string; close: () => void }> {
  const path = join(dir, name);
  const server = createServer((sock) => {
    sock.write('{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}}, "capabilities": []}}\r\n');
    sock.once('data', () => sock.destroy());
  });
  await new Promise<void>((r) => server.listen(path, r));
  return { path, close: () => server.close() };
}

function qemuEnd(code: number, stderr: string): QemuExit {
  return { status: code, guestStatus: null, qemuCode: code, signal: null, kernelPanic: false, timedOut: false, stopped: false, elapsedMs: 90, stderr };
}

test('QMP closed by a QEMU that is exiting: the failure waits for the exit and reports QEMU\'s own words', async (t) => {
  const server = await closingQmpServer('exiting.sock');
  t.teardown(server.close);
  // The exit is seen after the socket closed, as it was when a corrupt state ended QEMU.
  const exited = new Promise<QemuExit>((r) => setTimeout(() => r(qemuEnd(1, 'qemu-system-x86_64: load of migration failed: Invalid argument\n')), 150));
  const err = await t.throwsAsync(connectRestorableQmp(server.path, exited, { timeoutMs: 10_000, graceMs: 5_000 }), { instanceOf: QmpUnavailable });
  t.is(err!.qemuEnd?.qemuCode, 1);
  t.regex(err!.message, /closed before QEMU answered qmp_capabilities \(QEMU exited \(code 1, signal null\): qemu-system-x86_64: load of migration failed: Invalid argument\)$/);
});

test('QMP that fails while QEMU goes on running: no end to report after the grace time', async (t) => {
  const server = await closingQmpServer('running.sock');
  t.teardown(server.close);
  const err = await t.throwsAsync(connectRestorableQmp(server.path, new Promise<QemuExit>(() => {}), { timeoutMs: 10_000, graceMs: 50 }), { instanceOf: QmpUnavailable });
  t.is(err!.qemuEnd, null);
  t.regex(err!.message, /closed before QEMU answered qmp_capabilities$/);
});
