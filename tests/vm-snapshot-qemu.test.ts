// Saved VM states under QEMU (appliance/run/vm-snapshot.ts), with the appliance in this
// process and a folder of states of its own: the first start boots, saves and serves; the
// next restores and serves, with the host's wall clock (the state was saved seconds
// earlier) and its devices hotplugged on PCI; a state QEMU cannot load is replaced; a
// cold boot (--cold-boot) neither reads nor writes one and keeps virtio-mmio. Every start
// is stopped in a finally, and its QEMU and virtiofsd are checked gone by pid.
import test from 'ava';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { qemuAvailable } from '../appliance/qemu/launch.js';
import { type ApplianceOptions, type RunningAppliance, startAppliance } from '../appliance/run/appliance.js';
import { reportLingering } from './support/linger-report.js';
import { pidAlive } from './support/pid-alive.js';

const stateDir = mkdtempSync(join(tmpdir(), 'tsvirtio-vm-states-'));
const savedEnv = process.env['TSVIRTIO_VM_STATE_DIR'];
process.env['TSVIRTIO_VM_STATE_DIR'] = stateDir;
test.after.always(() => {
  if (savedEnv === undefined) delete process.env['TSVIRTIO_VM_STATE_DIR'];
  else process.env['TSVIRTIO_VM_STATE_DIR'] = savedEnv;
  rmSync(stateDir, { recursive: true, force: true });
});

// Once, in CI, this file's tests all passed and its process did not exit (ava: "Failed to
// exit"); it could not be reproduced. If it happens again, this says what held it.
reportLingering('vm-snapshot-qemu');

const ready = qemuAvailable() && existsSync('/usr/lib/qemu/virtiofsd');
const qtest = ready ? test.serial : test.skip;
if (!ready) console.warn('vm-snapshot-qemu: skipped (needs qemu-system-x86_64 and virtiofsd)');


/** Starts the appliance, runs `body`, and always stops it; checks that its QEMU and virtiofsd are gone. */
async function withAppliance(opts: Partial<ApplianceOptions>, progress: string[], body: (app: RunningAppliance) => Promise<void>): Promise<void> {
  const app = await startAppliance({ port: 0, pingPongPort: 0, machine: 'microvm', memoryMiB: 128, progress: (l) => progress.push(l), ...opts });
  const pids = [app.qemuPid, app.virtiofsdPid];
  try {
    await body(app);
  } finally {
    await app.stop();
    for (const pid of pids) if (pidAlive(pid)) process.kill(pid, 'SIGKILL');
  }
  for (const pid of pids) if (pidAlive(pid)) throw new Error(`pid ${pid} outlived stop()`);
}

/** GET big.html: status, the Date header (ms), the body length, and the host's clock when it came. */
function getBig(port: number): Promise<{ status: number; dateMs: number; length: number; hostMs: number }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/big.html', agent: false, timeout: 60_000 }, (res) => {
      let length = 0;
      res.on('data', (d: Buffer) => (length += d.length));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, dateMs: Date.parse(res.headers.date ?? ''), length, hostMs: Date.now() }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    req.end();
  });
}

const states = (): string[] => readdirSync(stateDir).filter((f) => f.endsWith('.state'));
const steps = (app: RunningAppliance): string[] => app.timeline.waterfall().map((s) => s.step);

qtest('the first start saves the VM state; the next restores it, with the host\'s clock and its devices hotplugged', async (t) => {
  const first: string[] = [];
  let savedAt = 0;
  await withAppliance({}, first, async (app) => {
    t.is(app.vmState?.mode, 'saved');
    t.deepEqual(states(), [app.vmState!.path.replace(/^.*\//, '')]);
    t.true(statSync(app.vmState!.path).size > 10e6, 'the guest\'s memory is in it');
    t.deepEqual(steps(app), ['QEMU start', 'firmware', 'kernel', 'init', 'exec', 'node start', 'DMA memory', 'save state', 'resume', 'hotplug', 'devices', 'services', 'first response']);
    const r = await getBig(app.webPort);
    t.is(r.status, 200);
    t.true(r.length > 100_000);
    savedAt = Date.now();
  });
  t.true(first.some((l) => /^saved the VM state \([\d.]+ MB, .*\): later starts restore it$/.test(l)), first.join('\n'));

  // A restored guest's clock still reads the moment of the save, until the resume line sets it.
  const gapMs = 10_000;
  await new Promise((r) => setTimeout(r, Math.max(0, savedAt + gapMs - Date.now())));
  const second: string[] = [];
  await withAppliance({}, second, async (app) => {
    t.is(app.vmState?.mode, 'restored');
    t.true(second.some((l) => l.startsWith('restoring the saved VM state (microvm, 128 MiB)')), second.join('\n'));
    t.deepEqual(steps(app), ['QEMU start', 'restore', 'resume', 'hotplug', 'devices', 'services', 'first response']);
    const r = await getBig(app.webPort);
    t.is(r.status, 200);
    // The Date header has whole seconds; the guest read the host's time when it resumed.
    t.true(Math.abs(r.hostMs - r.dateMs) < gapMs / 2, `guest Date ${new Date(r.dateMs).toISOString()}, host ${new Date(r.hostMs).toISOString()}`);
    // The resume line (with its random bytes) is not in the console the host keeps.
    t.false(app.qemu.console().includes('tsvirtio-resume'));
    t.regex(app.qemu.console(), /resumed: wall clock moved by [\d.]+ s; 32 fresh random bytes for the kernel and OpenSSL generators \(in [\d.]+ ms\)/);
    // The devices are on PCI, hotplugged: the guest said where it found them.
    t.regex(app.qemu.console(), /0000:0[12]:00\.0 1af4:1053 -> \/dev\/uio\d/);
  });
  t.is(states().length, 1, 'restoring wrote no new state');
});

qtest('a state QEMU cannot load is deleted and replaced: booted cold, saved, served', async (t) => {
  const [name] = states();
  t.truthy(name, 'the previous test left a state');
  const path = join(stateDir, name!);
  writeFileSync(path, Buffer.from('QEVM this is not a VM state\n'));
  const progress: string[] = [];
  await withAppliance({}, progress, async (app) => {
    t.is(app.vmState?.mode, 'saved');
    t.true(progress.some((l) => l.startsWith(`the saved VM state ${path} did not load (`) && l.endsWith('): deleted it; booting cold to save a new one')), progress.join('\n'));
    t.is((await getBig(app.webPort)).status, 200);
  });
  t.true(statSync(path).size > 10e6, 'a whole new state in its place');
});

qtest('a cold boot (--cold-boot) neither restores nor saves, and keeps its devices on virtio-mmio', async (t) => {
  const before = states().map((f) => [f, statSync(join(stateDir, f)).mtimeMs]);
  const progress: string[] = [];
  await withAppliance({ vmSnapshot: false }, progress, async (app) => {
    t.is(app.vmState, null);
    t.true(progress.includes('booting (microvm, 128 MiB)…'), progress.join('\n'));
    t.deepEqual(steps(app), ['QEMU start', 'firmware', 'kernel', 'init', 'exec', 'node start', 'DMA memory', 'devices', 'services', 'first response']);
    t.regex(app.qemu.console(), /virtio-mmio\.\d+ \S+ -> \/dev\/uio\d, virtio device 19/);
    t.is((await getBig(app.webPort)).status, 200);
  });
  t.deepEqual(
    states().map((f) => [f, statSync(join(stateDir, f)).mtimeMs]),
    before,
  );
});
