// The daemon with its VMs on threads of their own (--threads): who shares a thread
// (vm-threads.ts, property-tested), the setting on the command line and in the config
// file, and the threaded daemon itself (threaded-daemon.ts) with real vhost-user servers,
// simulated guests of the scale bench's load generator, checked streams through the
// hybrid socket and the TCP forwards, /metrics gathered from every thread, and a close
// that leaves no socket, thread or fd behind.
import test from 'ava';
import fc from 'fast-check';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { get } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { addonAvailable } from '../kernel/native/index.js';
import { CliUsageError, parseArgs } from '../drivers/virtio-vsock/daemon/config.js';
import { ConfigFileError, parseConfigText } from '../drivers/virtio-vsock/daemon/config-file.js';
import type { DaemonConfig, VmConfig } from '../drivers/virtio-vsock/daemon/settings.js';
import { startThreadedDaemon } from '../drivers/virtio-vsock/daemon/threaded-daemon.js';
import { planVmThreads, vmsThatShareALoop } from '../drivers/virtio-vsock/daemon/vm-threads.js';
import { GUEST_PORT, LoadGenerator, type VmPlan } from '../bench/scale/load-generator.js';

const GROUPS = ['a', 'b', 'c'];
const PCAPS = ['/tmp/one.pcap', '/tmp/two.pcap'];

const configs = fc
  .record({
    vms: fc.array(fc.record({ groups: fc.subarray(GROUPS), pcap: fc.option(fc.constantFrom(...PCAPS), { nil: undefined }) }), { minLength: 1, maxLength: 12 }),
    daemonPcap: fc.option(fc.constantFrom(...PCAPS), { nil: undefined }),
    forwardsPerVm: fc.array(fc.nat(2), { minLength: 12, maxLength: 12 }),
    threads: fc.oneof(fc.constant('per-vm' as const), fc.nat(6)),
  })
  .map(({ vms, daemonPcap, forwardsPerVm, threads }): DaemonConfig => {
    const list: VmConfig[] = vms.map((v, i) => ({
      guestCid: 3 + i,
      socketPath: `/tmp/v${i}.sock`,
      udsPath: null,
      ...(v.groups.length > 0 ? { groups: v.groups } : {}),
      ...(v.pcap !== undefined ? { pcapPath: v.pcap } : {}),
    }));
    const forwards = list.flatMap((vm, i) => Array.from({ length: forwardsPerVm[i]! }, (_, k) => ({ listenHost: '127.0.0.1', listenPort: 20000 + i * 4 + k, guestCid: vm.guestCid, guestPort: 80 + k })));
    return { vms: list, forwards, threads, ...(daemonPcap !== undefined ? { pcapPath: daemonPcap } : {}) };
  });

test('planVmThreads: every VM runs exactly once; VMs of a shared group or capture file share a thread; at most N threads; each forward goes with its VM', (t) => {
  fc.assert(
    fc.property(configs, (config) => {
      const plans = planVmThreads(config);
      const sets = vmsThatShareALoop(config);
      const wanted = config.threads === 'per-vm' ? sets.length : Math.min(config.threads as number, sets.length);
      if (wanted <= 1) return plans === null;
      if (plans === null || plans.length !== wanted) return false;
      const threadOf = new Map<number, number>();
      plans.forEach((p, k) => p.config.vms.forEach((vm) => threadOf.set(vm.guestCid, k)));
      const everyOnce = plans.reduce((n, p) => n + p.config.vms.length, 0) === config.vms.length && threadOf.size === config.vms.length;
      const capture = (vm: VmConfig): string | undefined => vm.pcapPath ?? config.pcapPath;
      const together = config.vms.every((x) =>
        config.vms.every((y) => {
          const share = (x.groups ?? []).some((g) => (y.groups ?? []).includes(g)) || (capture(x) !== undefined && capture(x) === capture(y));
          return !share || threadOf.get(x.guestCid) === threadOf.get(y.guestCid);
        }),
      );
      const forwardsWithVm = plans.every((p) => p.config.forwards.every((f) => threadOf.get(f.guestCid) === plans.indexOf(p))) && plans.reduce((n, p) => n + p.config.forwards.length, 0) === config.forwards.length
        && plans.every((p) => p.forwardIndices.length === p.config.forwards.length && p.forwardIndices.every((i, j) => config.forwards[i] === p.config.forwards[j]));
      // In a thread, the VMs' captures are those of the whole config; no thread serves metrics or starts threads of its own.
      const settings = plans.every((p) => p.config.metrics === undefined && p.config.threads === 0 && p.config.vms.every((vm) => capture(vm) === (vm.pcapPath ?? p.config.pcapPath)));
      return everyOnce && together && forwardsWithVm && settings;
    }),
  );
  t.pass();
});

test('planVmThreads: 0 (the default), a single VM, or VMs that must all meet keep every VM on the main thread; N spreads the VMs evenly', (t) => {
  const vm = (cid: number, extra: Partial<VmConfig> = {}): VmConfig => ({ guestCid: cid, socketPath: `/tmp/${cid}.sock`, udsPath: null, ...extra });
  const four = [vm(3), vm(4), vm(5), vm(6)];
  t.is(planVmThreads({ vms: four, forwards: [] }), null);
  t.is(planVmThreads({ vms: four, forwards: [], threads: 0 }), null);
  t.is(planVmThreads({ vms: [vm(3)], forwards: [], threads: 'per-vm' }), null);
  t.is(planVmThreads({ vms: [vm(3, { groups: ['g'] }), vm(4, { groups: ['g'] })], forwards: [], threads: 'per-vm' }), null);
  t.is(planVmThreads({ vms: four, forwards: [], threads: 'per-vm', pcapPath: '/tmp/all.pcap' }), null, 'one capture file for every VM: one writer');
  t.deepEqual(planVmThreads({ vms: four, forwards: [], threads: 'per-vm' })!.map((p) => p.name), ['vm 3', 'vm 4', 'vm 5', 'vm 6']);
  t.deepEqual(planVmThreads({ vms: four, forwards: [], threads: 2 })!.map((p) => p.name), ['vms 3,5', 'vms 4,6']);
  // A set of three goes first; the two single VMs then fill the other thread.
  const grouped = [vm(3), vm(4, { groups: ['g'] }), vm(5, { groups: ['g'] }), vm(6, { groups: ['g'] }), vm(7)];
  t.deepEqual(planVmThreads({ vms: grouped, forwards: [], threads: 2 })!.map((p) => p.name), ['vms 3,7', 'vms 4,5,6']);
});

test('--threads and threads: per-vm or 0..1024; anything else is refused with the flag or the file and line', (t) => {
  const vm = ['--vm', 'guest-cid=3,socket=/tmp/s.sock'];
  const threadsOf = (args: string[]): unknown => (parseArgs([...vm, ...args]) as { config: DaemonConfig }).config.threads;
  t.is(threadsOf([]), undefined);
  t.is(threadsOf(['--threads', 'per-vm']), 'per-vm');
  t.is(threadsOf(['--threads=4']), 4);
  t.is(threadsOf(['--threads', '0']), 0);
  for (const [bad, why] of [['many', /neither per-vm nor a number of threads/], ['-1', /neither per-vm/], ['1025', /1025/], ['2.5', /neither per-vm/]] as const) {
    const e = t.throws(() => parseArgs([...vm, '--threads', bad]), { instanceOf: CliUsageError }, bad);
    t.regex(e!.message, why, bad);
    t.is(e!.flag, '--threads');
  }
  const file = (threads: string): string => `vms:\n  - guest_cid: 3\n    socket: /tmp/s.sock\nthreads: ${threads}\n`;
  t.is(parseConfigText(file('per-vm'), 'd.yaml').threads, 'per-vm');
  t.is(parseConfigText(file('3'), 'd.yaml').threads, 3);
  for (const bad of ['-1', 'lots', '1.5', '[1]']) {
    const e = t.throws(() => parseConfigText(file(bad), 'd.yaml'), { instanceOf: ConfigFileError }, bad);
    t.regex(e!.message, /^d\.yaml:4:\d+: threads: /, bad);
  }
  // A flag overrides the file.
  const dir = mkdtempSync(join(tmpdir(), 'vm-threads-cfg-'));
  try {
    const path = join(dir, 'd.yaml');
    writeFileSync(path, file('2'));
    t.is((parseArgs(['--config', path]) as { config: DaemonConfig }).config.threads, 2);
    t.is((parseArgs(['--config', path, '--threads', 'per-vm']) as { config: DaemonConfig }).config.threads, 'per-vm');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

const maybe = addonAvailable() ? test.serial : test.skip;
const openFds = (): number => readdirSync('/proc/self/fd').length;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function scrape(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    get({ host: '127.0.0.1', port, path: '/metrics' }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`status ${res.statusCode}: ${body}`))));
    }).on('error', reject);
  });
}

maybe('VM threads: guests on two threads stream through the hybrid socket and TCP forwards intact; /metrics has every VM and every thread; close leaves nothing behind', async (t) => {
  t.timeout(180_000);
  const dir = mkdtempSync(join(tmpdir(), 'vm-threads-'));
  const fdsBefore = openFds();
  const cids = [3, 4, 5];
  const config: DaemonConfig = {
    // 4 and 5 share a group, so a thread; 3 gets one of its own.
    vms: cids.map((cid) => ({ guestCid: cid, socketPath: join(dir, `vm${cid}.sock`), udsPath: join(dir, `vm${cid}.vsock`), ...(cid === 3 ? {} : { groups: ['pair'] }) })),
    forwards: cids.map((cid) => ({ listenHost: '127.0.0.1', listenPort: 0, guestCid: cid, guestPort: GUEST_PORT })),
    metrics: { host: '127.0.0.1', port: 0, allowRemote: false },
    threads: 'per-vm',
  };
  const logs: string[] = [];
  const daemon = await startThreadedDaemon(config, planVmThreads(config)!, { log: (l) => logs.push(l) });
  const gen = new LoadGenerator({ driver: { rxBuffers: 16, txSlots: 16, connectTimeoutMs: 30_000 }, memoryBytes: 8 << 20, pacing: { rate: 64 * 1024, chunk: 4096 } });
  let closed = false;
  t.teardown(async () => {
    await gen.close();
    if (!closed) await daemon.close();
    rmSync(dir, { recursive: true, force: true });
  });
  let failure: Error | null = null;
  void daemon.failed.then((e) => (failure = e));
  t.deepEqual(daemon.threads.map((th) => [th.name, [...th.cids]]), [['vm 3', [3]], ['vms 4,5', [4, 5]]]);
  t.true(logs.some((l) => l.includes('[cid 4] vhost-user at')) && logs.some((l) => l.includes('[daemon] 2 VM threads: vm 3; vms 4,5')), logs.join('\n'));
  t.deepEqual(daemon.forwards.map((f) => f.guestCid), cids);
  t.true(daemon.forwards.every((f) => f.port > 0));

  const plans: VmPlan[] = cids.map((cid, i) => ({ cid, socketPath: join(dir, `vm${cid}.sock`), udsPath: join(dir, `vm${cid}.vsock`), tcpPort: daemon.forwards[i]!.port, greedy: false }));
  for (const p of plans) await gen.attach(p);
  const opened = (await Promise.all(plans.map((p) => gen.open(p.cid, 6)))).flat();
  t.deepEqual(opened.filter((c) => c.openError !== null).map((c) => c.openError), []);
  t.deepEqual([...new Set(opened.map((c) => c.kind))].sort(), ['guest', 'hybrid', 'tcp']);
  gen.setMode(3, 'flood');
  for (const cid of [4, 5]) gen.setMode(cid, 'paced');
  const all = cids.flatMap((cid) => gen.connectionsOf(cid));
  while (!all.every((c) => c.hostToGuestBytes >= 16 * 1024 && c.guestToHostBytes >= 16 * 1024)) await sleep(20);

  const m = await scrape(daemon.metrics!.address().port);
  for (const cid of cids) {
    t.regex(m, new RegExp(`^vsock_vm_attached\\{cid="${cid}"\\} 1$`, 'm'), `cid ${cid} attached`);
    t.regex(m, new RegExp(`^vsock_connections_open\\{cid="${cid}"\\} 6$`, 'm'), `cid ${cid} has its 6 connections`);
  }
  for (const thread of ['main', 'vm 3', 'vms 4,5']) t.regex(m, new RegExp(`^nodejs_eventloop_time_seconds_total\\{thread="${thread}",state="active"\\} [0-9.e-]+$`, 'm'), thread);
  t.regex(m, /^nodejs_eventloop_delay_seconds_count [1-9]\d*$/m);
  t.is(m.match(/^# TYPE vsock_vm_attached gauge$/gm)?.length, 1, 'each family once, whatever thread its VMs are on');

  const { outcomes, stuck } = await gen.finish(cids, 120_000);
  t.is(stuck.length, 0, JSON.stringify(stuck.slice(0, 3)));
  t.deepEqual(outcomes.filter((o) => o.problems.length > 0), []);
  t.is(outcomes.length, 18);
  await gen.close();
  await daemon.close();
  closed = true;
  t.is(failure, null, 'no VM thread failed');
  t.deepEqual(readdirSync(dir).sort(), [], 'every vhost-user and hybrid socket removed');
  // The threads' fds (vhost-user, eventfds, guest memory, host sockets) are the process's: all closed.
  while (openFds() > fdsBefore) await sleep(20);
  t.is(openFds(), fdsBefore);
});

maybe('VM threads: a VM that cannot start fails the start with its path, and the threads already up are stopped', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vm-threads-bad-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const fdsBefore = openFds();
  const notASocket = join(dir, 'vm4.vsock');
  writeFileSync(notASocket, 'a file, not a socket');
  const config: DaemonConfig = {
    vms: [3, 4].map((cid) => ({ guestCid: cid, socketPath: join(dir, `vm${cid}.sock`), udsPath: join(dir, `vm${cid}.vsock`) })),
    forwards: [],
    threads: 'per-vm',
  };
  const e = await t.throwsAsync(startThreadedDaemon(config, planVmThreads(config)!, { log: () => {} }));
  t.true(e!.message.includes(notASocket), e!.message);
  t.deepEqual(readdirSync(dir), ['vm4.vsock'], 'the other VM\'s sockets are gone again');
  while (openFds() > fdsBefore) await sleep(20);
  t.is(openFds(), fdsBefore);
});

test('VM threads: a thread that dies after the start settles `failed` with its name and error (the CLI then stops every VM, exit status 1)', async (t) => {
  const config: DaemonConfig = { vms: [3, 4].map((cid) => ({ guestCid: cid, socketPath: `/tmp/unused-${cid}.sock`, udsPath: null })), forwards: [], threads: 'per-vm' };
  const logs: string[] = [];
  const daemon = await startThreadedDaemon(config, planVmThreads(config)!, { log: (l) => logs.push(l), vmThreadModule: new URL('./support/vm-thread-that-dies.js', import.meta.url) });
  t.teardown(() => daemon.close());
  t.deepEqual(logs.slice(0, 2).sort(), ['up: vm 3', 'up: vm 4']);
  const why = await daemon.failed;
  t.regex(why.message, /^VM thread \(vm [34]\) failed: Error: a bug in vm [34]/);
  await daemon.close();
});
