// Starting programs from V8 startup snapshots (kernel/guest/startup-snapshot.ts,
// appliance/image/snapshot.ts), on the host: a tiny probe program shows how arguments
// reach a deserialized main, that its top level ran only while building, that built-in
// modules and the addon load at run time (the addon from the blob's folder, as /app/ in
// the guest); the blob cache is reused and rebuilt when the entry changes; a failing
// entry gives node's error. Then the real guest program (dist/bundles/appliance.cjs):
// its snapshot builds without a warning, parses its flags and gets into boot(), which on
// a host panics (no hugepages, no virtio devices), and a bad flag reads as with the ESM
// bundle. No timings here: see the report of the change for those.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { appendFileSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ImageBuildError } from '../appliance/image/debian.js';
import { buildStartupSnapshot, findQemuUser } from '../appliance/image/snapshot.js';
import { scriptShapedArgv, startupSnapshotBlob } from '../kernel/guest/startup-snapshot.js';
import { findPciDevices } from '../kernel/pci/devices.js';
import { VIRTIO_PCI_MODERN_DEVICE_BASE, VIRTIO_PCI_VENDOR } from '../kernel/transport/pci-virtio-caps.js';

const root = fileURLToPath(new URL('../../', import.meta.url)); // dist/tests -> repository root
const probeScript = join(root, 'dist', 'bundles', 'snapshot-probe.cjs');
const addon = join(root, 'build', 'Release', 'tsvirtio.node');
const guestScript = join(root, 'dist', 'bundles', 'appliance.cjs');
const guestEsm = join(root, 'dist', 'bundles', 'appliance.js');

const work = mkdtempSync(join(tmpdir(), 'tsvirtio-snapshot-'));
test.after.always(() => rmSync(work, { recursive: true, force: true }));

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

function node(args: readonly string[], env: NodeJS.ProcessEnv = {}): Run {
  const r = spawnSync(process.execPath, args, { encoding: 'utf8', timeout: 60_000, env: { ...process.env, NODE_OPTIONS: undefined, ...env } });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** A copy of the probe's script bundle (build.mjs bundles it as it does the guest program). */
function copyProbe(dest: string): void {
  copyFileSync(probeScript, dest);
}

interface ProbeReport {
  args: string[];
  program: string;
  topLevelRanWhileBuilding: boolean;
  lazyBuiltin: string;
  firstAddonCandidate: string;
  pageSize: number | string;
  perfNowMs: number;
  uptimeMs: number;
}

function report(r: Run): ProbeReport {
  if (r.status !== 0) throw new Error(`probe failed (status ${r.status}):\n${r.stdout}${r.stderr}`);
  return JSON.parse(r.stdout.trim()) as ProbeReport;
}

test('startupSnapshotBlob: the blob among node options, resolved; null when building or absent', (t) => {
  t.is(startupSnapshotBlob(['--snapshot-blob', 'a.blob'], '/app'), '/app/a.blob');
  t.is(startupSnapshotBlob(['--snapshot-blob=/x/b.blob', '--max-old-space-size=64'], '/app'), '/x/b.blob');
  t.is(startupSnapshotBlob(['--snapshot_blob', 'c.blob'], '/'), '/c.blob');
  t.is(startupSnapshotBlob(['--snapshot-blob', 'a.blob', '--build-snapshot'], '/app'), null);
  t.is(startupSnapshotBlob([], '/app'), null);
  t.is(startupSnapshotBlob(['--snapshot-blob'], '/app'), null);
});

test('scriptShapedArgv: [node, program, ...args] from what a deserialized main gets', (t) => {
  t.deepEqual(scriptShapedArgv(['/usr/bin/node', '--drivers=ours', '--log'], '/app/a.blob'), ['/usr/bin/node', '/app/a.blob', '--drivers=ours', '--log']);
  t.deepEqual(scriptShapedArgv(['/usr/bin/node', '/app/main.js', '--drivers=ours'], '/app/a.blob'), ['/usr/bin/node', '/app/main.js', '--drivers=ours']);
  t.deepEqual(scriptShapedArgv(['/usr/bin/node'], '/app/a.blob'), ['/usr/bin/node', '/app/a.blob']);
});

test('a probe snapshot: arguments, lazy built-ins and the addon next to the blob; cached, rebuilt when the entry changes', async (t) => {
  const dir = join(work, 'probe');
  mkdirSync(dir);
  const entry = join(dir, 'probe.cjs');
  copyProbe(entry);
  const outDir = join(dir, 'cache');
  mkdirSync(outDir);

  const first = await buildStartupSnapshot({ entry, outDir, name: 'probe' });
  t.false(first.cached);
  t.is(dirname(first.path), outDir);
  t.regex(basename(first.path), /^probe-[0-9a-f]{16}\.blob$/);
  t.true(first.size > 0 && existsSync(first.path));
  const again = await buildStartupSnapshot({ entry, outDir, name: 'probe' });
  t.true(again.cached);
  t.is(again.path, first.path);
  t.is(again.size, first.size);

  // Flags after `--`: process.argv in script shape, the blob as the program. (1.5 s after
  // the build, so a clock counting from the build would show.)
  await new Promise((r) => setTimeout(r, 1500));
  const a = report(node(['--snapshot-blob', first.path, '--', '--alpha', '--beta=2']));
  t.deepEqual(a.args, ['--alpha', '--beta=2']);
  t.is(a.program, first.path);
  t.true(a.topLevelRanWhileBuilding, 'the top level ran at build time, not again from the blob');
  t.is(a.lazyBuiltin, 'function');
  // performance (loaded into the snapshot by startProgram) counts from this process's
  // start: within a second of process.uptime(), not offset by the time since the build.
  t.true(a.perfNowMs >= 0 && Math.abs(a.perfNowMs - a.uptimeMs) < 1000, `performance.now() ${a.perfNowMs} ms, uptime ${a.uptimeMs} ms`);
  // No addon in the blob's folder or above (a temp dir): the clear error, searched from the blob's folder.
  t.is(a.firstAddonCandidate, join(outDir, 'build', 'Release', 'tsvirtio.node'));
  t.is(a.pageSize, 'native addon not built: run `npm ci` (or `node build.mjs`)');

  // A script path before the flags (node ignores it: the snapshot has a main) is the program.
  const b = report(node(['--snapshot-blob', first.path, '/app/main.js', '--alpha']));
  t.deepEqual(b.args, ['--alpha']);
  t.is(b.program, '/app/main.js');

  // Flags right after the blob are node's own: node refuses them. Hence the `--`.
  const c = node(['--snapshot-blob', first.path, '--alpha']);
  t.is(c.status, 9);
  t.regex(c.stderr, /bad option: --alpha/);

  // The same script without a snapshot: the same arguments, its top level ran now.
  const plain = report(node([entry, '--alpha', '--beta=2']));
  t.deepEqual(plain.args, ['--alpha', '--beta=2']);
  t.is(plain.program, entry);
  t.false(plain.topLevelRanWhileBuilding);

  // The addon next to the blob, as /app/tsvirtio.node beside /app/<name>.blob in the guest.
  if (existsSync(addon)) {
    copyFileSync(addon, join(outDir, 'tsvirtio.node'));
    const withAddon = report(node(['--snapshot-blob', first.path, '--', '--x'], { TSVIRTIO_ADDON: undefined }));
    t.is(withAddon.pageSize, 4096);
    const explicit = report(node(['--snapshot-blob', first.path, '--'], { TSVIRTIO_ADDON: addon }));
    t.is(explicit.firstAddonCandidate, addon);
    t.is(explicit.pageSize, 4096);
  }

  // Another entry: another blob (the first one stays, young blobs are not pruned).
  appendFileSync(entry, '\n// changed\n');
  const changed = await buildStartupSnapshot({ entry, outDir, name: 'probe' });
  t.false(changed.cached);
  t.not(changed.path, first.path);
  t.true(existsSync(first.path));
  t.deepEqual(report(node(['--snapshot-blob', changed.path, '--', '--gamma'])).args, ['--gamma']);
});

test('V8 options are part of the blob: built with them, it runs only with them', async (t) => {
  const dir = join(work, 'options');
  mkdirSync(dir);
  const entry = join(dir, 'probe.cjs');
  copyProbe(entry);
  const plain = await buildStartupSnapshot({ entry, outDir: dir, name: 'probe' });
  const small = await buildStartupSnapshot({ entry, outDir: dir, name: 'probe', nodeOptions: ['--max-old-space-size=64'] });
  t.not(small.path, plain.path);
  t.deepEqual(report(node(['--max-old-space-size=64', '--snapshot-blob', small.path, '--', '--x'])).args, ['--x']);
  const mismatch = node(['--snapshot-blob', small.path, '--', '--x']);
  t.is(mismatch.status, 14);
  t.regex(mismatch.stderr, /different V8 configurations/);
});

test('eager compilation (the default): the program\'s bytecode is in the blob, which runs without V8 flags', async (t) => {
  const dir = join(work, 'eager');
  mkdirSync(dir);
  const entry = join(dir, 'probe.cjs');
  copyProbe(entry);
  const eager = await buildStartupSnapshot({ entry, outDir: dir, name: 'probe' });
  const lazy = await buildStartupSnapshot({ entry, outDir: dir, name: 'probe', eagerCompile: false });
  t.not(eager.path, lazy.path);
  // Functions never called while building (main, the addon loader, ...) have bytecode only in the eager blob.
  t.true(eager.size > lazy.size, `eager ${eager.size} B, lazy ${lazy.size} B`);
  // startProgram put V8's default back before the heap was written: no --no-lazy needed, none refused.
  for (const blob of [eager.path, lazy.path]) t.deepEqual(report(node(['--snapshot-blob', blob, '--', '--x'])).args, ['--x']);
});

/** `node ARGS` under qemu-user on QEMU's TCG `max` model: the CPU guests run on. */
function nodeOnQemuMax(args: readonly string[]): Run {
  const r = spawnSync(findQemuUser(), ['-cpu', 'max', process.execPath, ...args], { encoding: 'utf8', timeout: 120_000, env: { ...process.env, NODE_OPTIONS: undefined } });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('a guest blob (builderCpu qemu-max) is built on QEMU\'s CPU model and runs there; a cache entry of its own; no qemu-user: a clear error', async (t) => {
  const dir = join(work, 'qemu-max');
  mkdirSync(dir);
  const entry = join(dir, 'probe.cjs');
  copyProbe(entry);
  const onHost = await buildStartupSnapshot({ entry, outDir: dir, name: 'probe' });
  const forGuest = await buildStartupSnapshot({ entry, outDir: dir, name: 'probe', builderCpu: 'qemu-max' });
  t.not(forGuest.path, onHost.path);
  t.false(forGuest.cached);
  t.true((await buildStartupSnapshot({ entry, outDir: dir, name: 'probe', builderCpu: 'qemu-max' })).cached);
  t.deepEqual(report(nodeOnQemuMax(['--snapshot-blob', forGuest.path, '--', '--on-max'])).args, ['--on-max']);
  // Where this machine's CPU and QEMU's max differ in a feature V8 detects, V8's tags
  // differ and the host's blob is refused on QEMU's model, as it was in every guest.
  const tag = (r: Run): string => {
    t.is(r.status, 0, r.stderr);
    return r.stdout.trim();
  };
  const hostTag = tag(node(['-p', 'v8.cachedDataVersionTag()']));
  const maxTag = tag(nodeOnQemuMax(['-p', 'v8.cachedDataVersionTag()']));
  const hostBlobOnMax = nodeOnQemuMax(['--snapshot-blob', onHost.path, '--', '--x']);
  if (hostTag === maxTag) t.deepEqual(report(hostBlobOnMax).args, ['--x']);
  else {
    t.is(hostBlobOnMax.status, 14, hostBlobOnMax.stderr);
    t.regex(hostBlobOnMax.stderr, /different V8 configurations/);
  }

  const saved = process.env['TSVIRTIO_QEMU_USER'];
  process.env['TSVIRTIO_QEMU_USER'] = join(dir, 'no-such-qemu-x86_64');
  try {
    const err = await t.throwsAsync(buildStartupSnapshot({ entry, outDir: dir, name: 'other', builderCpu: 'qemu-max' }), { instanceOf: ImageBuildError });
    t.is((err as ImageBuildError).code, 'ERR_SNAPSHOT_QEMU_USER');
    t.regex(err!.message, /no-such-qemu-x86_64 is not installed .*apt-get install -y qemu-user/);
  } finally {
    if (saved === undefined) delete process.env['TSVIRTIO_QEMU_USER'];
    else process.env['TSVIRTIO_QEMU_USER'] = saved;
  }
  const bad = await t.throwsAsync(buildStartupSnapshot({ entry, outDir: dir, name: 'probe', builderCpu: 'kvm' as never }), { instanceOf: ImageBuildError });
  t.is((bad as ImageBuildError).code, 'ERR_SPEC');
});

test('a failing entry: ImageBuildError with node\'s error', async (t) => {
  const dir = join(work, 'failing');
  mkdirSync(dir);
  const entry = join(dir, 'broken.cjs');
  writeFileSync(entry, 'throw new Error("deliberately broken entry");\n');
  const err = await t.throwsAsync(buildStartupSnapshot({ entry, outDir: dir, name: 'broken' }), { instanceOf: ImageBuildError });
  t.is((err as ImageBuildError).code, 'ERR_SNAPSHOT_BUILD');
  t.true(err!.message.startsWith(`cannot build the startup snapshot of ${entry} with `), err!.message);
  t.regex(err!.message, /\(exit 1\):\n/);
  t.regex(err!.message, /Error: deliberately broken entry/);
  t.deepEqual(
    readdirSync(dir).filter((f) => f.endsWith('.tmp') || f.endsWith('.blob')),
    [],
    'no blob or temporary file left',
  );

  const missing = await t.throwsAsync(buildStartupSnapshot({ entry: join(dir, 'nope.cjs'), outDir: dir, name: 'x' }), { instanceOf: ImageBuildError });
  t.is((missing as ImageBuildError).code, 'ERR_SNAPSHOT_ENTRY');
  t.regex(missing!.message, /startup snapshot entry not found: .*nope\.cjs/);
  const badName = await t.throwsAsync(buildStartupSnapshot({ entry, outDir: dir, name: 'a/b' }), { instanceOf: ImageBuildError });
  t.is((badName as ImageBuildError).code, 'ERR_SPEC');
});

// A host with a virtio-fs PCI device of its own must not have it bound to uio by a test.
const hostHasVirtioFs = findPciDevices(VIRTIO_PCI_VENDOR, VIRTIO_PCI_MODERN_DEVICE_BASE + 26).length > 0;
const guestBuilt = existsSync(guestScript) && existsSync(guestEsm);

(guestBuilt && !hostHasVirtioFs ? test : test.skip)('the guest program from its snapshot: flags parsed, into boot(), which panics on a host; bad flags as with the ESM bundle', async (t) => {
  // Building prints nothing: no built-in module Node has not vetted for snapshots is loaded
  // at top level, and nothing runs.
  const scratch = join(work, 'guest-scratch.blob');
  const direct = node(['--snapshot-blob', scratch, '--build-snapshot', guestScript]);
  t.is(direct.status, 0, direct.stderr);
  t.is(direct.stdout + direct.stderr, '');

  const snap = await buildStartupSnapshot({ entry: guestScript, name: 'appliance' });
  t.true(snap.size > 0);
  const r = node(['--snapshot-blob', snap.path, '--', '--drivers=ours', '--log']);
  // Boot stage markers first (kernel/guest/boot.ts), then the start line.
  t.regex(r.stdout, /^tsvirtio-stage: node-start [\d.]+\ntsvirtio-stage: program-loaded [\d.]+\nappliance: node started .* program loaded \d+ ms after node started, args \["--drivers=ours","--log"\]\n/, r.stdout + r.stderr);
  const panic = /PANIC: appliance: main failed: (HugepageDmaError \[ERR_HUGEPAGE_ALLOC\]|PciError \[ERR_PCI_NO_DEVICE\]): /;
  t.regex(r.stdout, panic, r.stdout + r.stderr);
  t.is(r.status, 70);
  // The ESM bundle on the same host: the same failure.
  const esm = node([guestEsm, '--drivers=ours', '--log']);
  t.regex(esm.stdout, panic, esm.stdout + esm.stderr);
  t.is(r.stdout.match(panic)![1], esm.stdout.match(panic)![1]);

  for (const bad of [['--bogus'], ['--drivers=theirs'], ['--port=x', '--drivers=ours']]) {
    const fromSnapshot = node(['--snapshot-blob', snap.path, '--', ...bad]);
    const fromEsm = node([guestEsm, ...bad]);
    t.is(fromSnapshot.status, 2, bad.join(' '));
    t.is(fromEsm.status, 2, bad.join(' '));
    t.is(fromSnapshot.stdout, fromEsm.stdout, bad.join(' '));
    t.regex(fromSnapshot.stdout, /^appliance: (unknown flag "--bogus"|--drivers: expected ours or kernel, got "theirs"|--port: expected a vsock port, got "x")\n$/);
  }
});
