// Builds the stock-Linux guest image (downloads Debian packages on first use) and checks
// what went into it, by reading the cpio back; and that a second build is a cache hit.
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { S_IFCHR, S_IFLNK, S_IFMT, parseCpio, type CpioEntry } from '../appliance/image/cpio.js';
import { buildLinuxGuest } from '../appliance/image/linux-guest.js';
import { readModinfo, resolveModules } from '../appliance/image/initramfs.js';
import { cacheDir, type DebianKernel } from '../appliance/image/debian.js';

const hasXz = ((): boolean => {
  try {
    execFileSync('xz', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

test('the stock-Linux image holds busybox, socat with its libraries and loader, modules with modules.dep, and an init', async (t) => {
  const first = await buildLinuxGuest();
  t.log(`${first.initramfs.path}: ${(first.initramfs.size / 1e6).toFixed(1)} MB, ${first.initramfs.cached ? 'cached' : 'built'} in ${first.initramfs.buildMs} ms`);
  const again = await buildLinuxGuest();
  t.log(`second build: ${again.initramfs.cached ? 'cached' : 'built'} in ${again.initramfs.buildMs} ms`);
  t.true(again.initramfs.cached);
  t.is(again.initrd, first.initrd);

  const entries = new Map<string, CpioEntry>(parseCpio(readFileSync(first.initrd)).map((e) => [e.name, e]));
  const has = (p: string): boolean => entries.has(p);
  t.true(has('init'));
  t.regex(entries.get('init')!.data.toString(), /^#!\/bin\/busybox sh/);
  t.true(has('bin/busybox'));
  t.is(entries.get('bin/sh')!.data.toString(), '/bin/busybox');
  t.is(entries.get('lib')!.mode & S_IFMT, S_IFLNK);
  t.is(entries.get('lib64')!.data.toString(), 'usr/lib64');
  t.is(entries.get('dev/console')!.mode & S_IFMT, S_IFCHR);
  t.true(has('usr/bin/socat'));
  t.true(has('usr/lib64/ld-linux-x86-64.so.2'), 'the dynamic loader');
  for (const lib of ['libc.so.6', 'libssl.so.3', 'libcrypto.so.3', 'libwrap.so.0']) {
    t.true(has(`usr/lib/x86_64-linux-gnu/${lib}`), lib);
  }
  const v = first.kernelVersion;
  const dep = entries.get(`usr/lib/modules/${v}/modules.dep`)!.data.toString();
  t.regex(dep, /kernel\/net\/vmw_vsock\/vmw_vsock_virtio_transport\.ko: .*vsock\.ko/);
  for (const m of first.initramfs.modules) t.true(has(m.guest.replace(/^\/lib\//, 'usr/lib/')), m.guest);
});

test('module dependencies resolve in load order from the modules themselves', async (t) => {
  const { debianKernel } = await buildLinuxGuest();
  const mods = await resolveModules(debianKernel, ['vmw-vsock-virtio-transport']);
  const names = mods.map((m) => m.name);
  t.is(names.at(-1), 'vmw_vsock_virtio_transport');
  for (const m of mods) for (const d of m.depends) t.true(names.indexOf(d) < names.indexOf(m.name), `${d} before ${m.name}`);
  const info = readModinfo(readFileSync(mods.at(-1)!.host));
  t.deepEqual(info.get('vermagic')?.[0]?.split(' ')[0], debianKernel.version);
  await t.throwsAsync(resolveModules(debianKernel, ['no_such_module']), { message: /has no module no_such_module/ });
});

(hasXz ? test : test.skip)('compressed modules (.ko.xz) are decompressed on the host, in the same order', async (t) => {
  const { debianKernel: real } = await buildLinuxGuest();
  const plain = await resolveModules(real, ['vmw_vsock_virtio_transport']);
  const version = `fake-${process.pid}`;
  const root = mkdtempSync(join(tmpdir(), 'tsv-kmod-'));
  const modulesDir = join(root, 'lib', 'modules', version);
  t.teardown(() => {
    rmSync(root, { recursive: true, force: true });
    rmSync(cacheDir('modules', version), { recursive: true, force: true });
  });
  for (const m of plain) {
    const rel = relative(real.modulesDir, m.host);
    const dest = join(modulesDir, rel);
    mkdirSync(dirname(dest), { recursive: true });
    copyFileSync(m.host, dest);
    execFileSync('xz', ['-z', '-T1', dest]);
  }
  const fake: DebianKernel = { ...real, version, modulesDir, root };
  const resolved = await resolveModules(fake, ['vmw-vsock-virtio-transport']);
  t.deepEqual(resolved.map((m) => m.name), plain.map((m) => m.name));
  for (const [i, m] of resolved.entries()) {
    t.true(m.host.endsWith('.ko') && m.guest.endsWith('.ko'), m.host);
    t.true(readFileSync(m.host).equals(readFileSync(plain[i]!.host)), `${m.name} decompressed intact`);
  }
});
