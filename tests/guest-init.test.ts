// The microvm guest's /init (appliance/image/guest-init.ts, init/tsvirtio-init.c): its
// configuration file, and the build (freestanding, static, a few KB, cached). What it does
// when it runs is checked in QEMU (tests/qemu-node-guest.test.ts: mounts, environment,
// working folder, arguments with spaces, exit status, 128 + signal; the boot tests), and
// here what it says about a bad configuration.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ImageBuildError } from '../appliance/image/debian.js';
import { GUEST_INIT_CONFIG, buildGuestInit, guestInitConfig } from '../appliance/image/guest-init.js';
import { kernelCommandLine } from '../appliance/image/guest.js';
import { buildGuestKernel } from '../appliance/image/kernel-build.js';
import { MICROVM_KERNEL_ARGS } from '../appliance/image/node-guest.js';
import { buildSquashfs } from '../appliance/image/squashfs.js';
import { launchQemu, qemuAvailable, type QemuExit } from '../appliance/qemu/launch.js';
import { Cleanup, MACHINES } from './support/qemu-guest.js';

test('the configuration: program, arguments (spaces kept) and environment, one line each', (t) => {
  t.is(
    guestInitConfig({ program: '/usr/bin/node', args: ['--snapshot-blob', '/app/main.blob', '--', 'two words'], env: { NODE_ICU_DATA: '/usr/share/icu' } }),
    'program /usr/bin/node\narg --snapshot-blob\narg /app/main.blob\narg --\narg two words\nenv NODE_ICU_DATA=/usr/share/icu\n',
  );
  t.is(guestInitConfig({ program: '/bin/x', args: [] }), 'program /bin/x\n');
});

test('the configuration refuses what the init could not read back as written', (t) => {
  const refused = (c: Parameters<typeof guestInitConfig>[0]): string => {
    const e = t.throws(() => guestInitConfig(c), { instanceOf: ImageBuildError });
    t.is((e as ImageBuildError).code, 'ERR_SPEC');
    t.true(e!.message.includes(GUEST_INIT_CONFIG), e!.message);
    return e!.message;
  };
  t.regex(refused({ program: 'node', args: [] }), /program "node"/);
  t.regex(refused({ program: '/usr/bin/node', args: ['a\nprogram /bin/sh'] }), /argument/);
  t.regex(refused({ program: '/usr/bin/node', args: ['nul\0'] }), /argument/);
  t.regex(refused({ program: '/usr/bin/node', args: [], env: { 'BAD-NAME': 'x' } }), /environment variable "BAD-NAME=x"/);
  t.regex(refused({ program: '/usr/bin/node', args: [], env: { OK: 'two\nlines' } }), /environment variable/);
  t.regex(refused({ program: '/usr/bin/node', args: Array.from({ length: 201 }, (_, i) => String(i)) }), /201 arguments/);
});

const haveGcc = spawnSync('gcc', ['--version']).status === 0;
(haveGcc ? test : test.skip)('the init builds freestanding and static, a few KB, and is cached', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'guest-init-'));
  try {
    const first = await buildGuestInit(dir);
    t.false(first.cached);
    const elf = readFileSync(first.path);
    t.is(elf.readUInt32BE(0), 0x7f454c46, 'an ELF file');
    t.is(elf.readUInt16LE(16), 2, 'ET_EXEC: static, no interpreter');
    t.false(elf.includes(Buffer.from('/lib64/ld-linux')), 'no dynamic loader named');
    t.true(statSync(first.path).size < 64 * 1024, `${statSync(first.path).size} bytes`);
    t.true(elf.includes(Buffer.from(GUEST_INIT_CONFIG)), 'reads the configuration file');
    const again = await buildGuestInit(dir);
    t.true(again.cached);
    t.is(again.path, first.path);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// In QEMU: an image whose configuration is wrong. The init says what is wrong, on the
// console, and still ends the guest with an exit line (no kernel panic, no hang).
async function bootWithConfig(config: string): Promise<{ exit: QemuExit; console: string }> {
  const cleanup = new Cleanup();
  try {
    const [kernel, init] = await Promise.all([buildGuestKernel(), buildGuestInit()]);
    const squashfs = await buildSquashfs({
      name: 'guest-init-test',
      directories: [{ guest: '/app' }],
      files: [{ guest: GUEST_INIT_CONFIG, data: config }],
      init: readFileSync(init.path),
    });
    const qemu = cleanup.qemu(launchQemu({ machine: 'microvm', kernel: kernel.image, rootfs: squashfs.path, append: kernelCommandLine(MICROVM_KERNEL_ARGS, ['two words']), timeoutMs: 5 * 60 * 1000 }));
    return { exit: await qemu.exited, console: qemu.console() };
  } finally {
    await cleanup.run();
  }
}

const qemuTest = qemuAvailable() && MACHINES.includes('microvm') ? test.serial : test.skip;

qemuTest('in QEMU: a program that cannot be started is reported, and the guest ends with status 127', async (t) => {
  const r = await bootWithConfig('program /usr/bin/nope\narg x\n');
  t.regex(r.console, /tsvirtio-init: cannot run \/usr\/bin\/nope: errno 2/);
  t.is(r.exit.guestStatus, 127, r.console.slice(-2000));
  t.false(r.exit.kernelPanic);
  t.regex(r.console, /tsvirtio-stage: init [\d.]+\ntsvirtio-stage: exec [\d.]+/);
});

qemuTest('in QEMU: a bad directive is named with its line, and the guest ends with status 127', async (t) => {
  const r = await bootWithConfig('program /usr/bin/node\n\nrun /bin/sh\n');
  t.regex(r.console, /tsvirtio-init: \/etc\/tsvirtio-init\.conf line 3: bad directive "run"/);
  t.is(r.exit.guestStatus, 127, r.console.slice(-2000));
  t.false(r.exit.kernelPanic);
});
