// The daemon with several busy VMs, small (the full size is `npm run bench -- scale`):
// the daemon runs in this process with its real vhost-user servers and host ends, and the
// bench's load generator (bench/scale) attaches simulated guests over vhost-user (our
// front end, a memfd as guest RAM, eventfds) with our vsock driver on each. Every stream
// is SHA-256-checked end to end. No timing assertions: progress is waited for, and a
// starved connection would make the test run into its timeout.
import test, { type ExecutionContext } from 'ava';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { addonAvailable } from '../kernel/native/index.js';
import { type RunningDaemon, startDaemon } from '../drivers/virtio-vsock/daemon/daemon.js';
import { HOST_TO_GUEST_QUEUE_LIMIT_BYTES, CONN_BUF_ALLOC_BYTES } from '../drivers/virtio-vsock/device/constants.js';
import type { CheckedConnection } from '../bench/scale/checked-connection.js';
import { GUEST_PORT, LoadGenerator, type VmPlan } from '../bench/scale/load-generator.js';

// Serial: the back-to-idle check counts this process's fds, which another test running meanwhile would change.
const maybe = addonAvailable() ? test.serial : test.skip;
const FIRST_CID = 3;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const openFds = (): number => readdirSync('/proc/self/fd').length;

interface Fixture {
  daemon: RunningDaemon;
  gen: LoadGenerator;
  plans: VmPlan[];
  logs: string[];
  fdsBefore: number;
}

async function setup(t: ExecutionContext, vms: number, greedy: number[]): Promise<Fixture> {
  const dir = mkdtempSync(join(tmpdir(), 'vsock-scale-'));
  const logs: string[] = [];
  const daemon = await startDaemon(
    {
      vms: Array.from({ length: vms }, (_, i) => ({ guestCid: FIRST_CID + i, socketPath: join(dir, `vm${i}.sock`), udsPath: join(dir, `vm${i}.vsock`) })),
      forwards: Array.from({ length: vms }, (_, i) => ({ listenHost: '127.0.0.1', listenPort: 0, guestCid: FIRST_CID + i, guestPort: GUEST_PORT })),
      logLevel: 'info',
    },
    { log: (line) => logs.push(line) },
  );
  const plans: VmPlan[] = Array.from({ length: vms }, (_, i) => ({
    cid: FIRST_CID + i,
    socketPath: join(dir, `vm${i}.sock`),
    udsPath: join(dir, `vm${i}.vsock`),
    tcpPort: daemon.vms.get(FIRST_CID + i)!.forwards[0]!.address()!.port,
    greedy: greedy.includes(i),
  }));
  const fdsBefore = openFds();
  const gen = new LoadGenerator({ driver: { rxBuffers: 16, txSlots: 16, connectTimeoutMs: 30_000 }, memoryBytes: 8 << 20, pacing: { rate: 32 * 1024, chunk: 2048 } });
  t.teardown(async () => {
    await gen.close();
    await daemon.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { daemon, gen, plans, logs, fdsBefore };
}

/** Bytes each connection has received each way, by id. */
function snapshot(conns: readonly CheckedConnection[]): Map<number, [number, number]> {
  return new Map(conns.map((c) => [c.id, [c.hostToGuestBytes, c.guestToHostBytes]]));
}

/** Waits until every connection moved at least `bytes` more each way than in `since`. */
async function progressed(conns: readonly CheckedConnection[], since: Map<number, [number, number]>, bytes: number): Promise<void> {
  const done = (): boolean => conns.every((c) => c.hostToGuestBytes - since.get(c.id)![0] >= bytes && c.guestToHostBytes - since.get(c.id)![1] >= bytes);
  while (!done()) await sleep(20);
}

/** Waits until the daemon is back where it was before any VM attached: no VM, no connection, no byte, no extra fd. */
async function backToIdle(t: ExecutionContext, fx: Fixture): Promise<void> {
  await fx.gen.close();
  const idle = (): boolean =>
    [...fx.daemon.devices.values()].every((d) => !d.attached && d.connections === 0 && d.hostBufferedBytes === 0 && d.hostToGuestQueuedBytes === 0) && openFds() === fx.fdsBefore;
  while (!idle()) await sleep(20);
  for (const [cid, d] of fx.daemon.devices) {
    t.false(d.attached, `cid ${cid} detached`);
    t.is(d.connections, 0, `cid ${cid}: no connection left`);
    t.is(d.hostBufferedBytes, 0, `cid ${cid}: no byte held`);
    t.is(d.stats.dropped.internalError, 0, `cid ${cid}: no internal error`);
  }
  t.is(openFds(), fx.fdsBefore, 'the fds of every VM, connection and host end are closed');
}

maybe('4 VMs x 10 connections, one flooding: every connection of the others progresses both ways, every byte intact, back to idle', async (t) => {
  t.timeout(240_000);
  const fx = await setup(t, 4, [0]);
  const { gen, plans } = fx;
  for (const p of plans) await gen.attach(p);
  const opened = (await Promise.all(plans.map((p) => gen.open(p.cid, 10)))).flat();
  t.is(opened.filter((c) => c.openError !== null).length, 0, 'every connection opened');
  t.deepEqual([...new Set(opened.map((c) => c.kind))].sort(), ['guest', 'hybrid', 'tcp']);
  const flood = gen.connectionsOf(plans[0]!.cid);
  const quiet = plans.slice(1).flatMap((p) => gen.connectionsOf(p.cid));
  gen.setMode(plans[0]!.cid, 'flood');
  for (const p of plans.slice(1)) gen.setMode(p.cid, 'paced');
  // While VM 1 floods, each connection of the others moves 64 KiB more each way, and so
  // does each of the flooding VM's own connections (a flooding connection does not
  // starve its siblings either).
  const since = snapshot([...flood, ...quiet]);
  await progressed(quiet, since, 64 * 1024);
  await progressed(flood, since, 64 * 1024);
  const floodBytes = flood.reduce((n, c) => n + c.hostToGuestBytes - since.get(c.id)![0], 0);
  t.true(floodBytes > 0);
  const { outcomes, stuck } = await gen.finish(gen.cids, 120_000);
  t.is(stuck.length, 0, JSON.stringify(stuck.slice(0, 3)));
  t.deepEqual(outcomes.filter((o) => o.problems.length > 0), []);
  t.is(outcomes.length, 40);
  await backToIdle(t, fx);
});

maybe('bad input: a guest that stops consuming, one that kicks in a loop, one whose memory table changes under load, one that vanishes mid-transfer: each counted and contained, the others keep going', async (t) => {
  t.timeout(300_000);
  // VMs: 0 stops consuming, 1 kicks in a loop, 2 remaps its memory, 3 floods then vanishes, 4 is the witness.
  const fx = await setup(t, 5, [3]);
  const { gen, plans, daemon } = fx;
  const [deaf, storm, remap, vanish, witness] = plans.map((p) => p.cid) as [number, number, number, number, number];
  for (const p of plans) await gen.attach(p);
  for (const p of plans) await gen.open(p.cid, 6);
  for (const p of plans) gen.setMode(p.cid, p.cid === vanish ? 'flood' : 'paced');
  const all = plans.flatMap((p) => gen.connectionsOf(p.cid));
  await progressed(all, snapshot(all), 8 * 1024);

  const mapsBefore = fx.logs.filter((l) => l.includes(`[cid ${remap}]`) && l.includes('memory table mapped')).length;
  const kicksBefore = daemon.devices.get(storm)!.stats.kicks.tx;
  gen.guestOf(deaf)!.controls.setDeaf(true);
  gen.guestOf(storm)!.controls.kickInLoop(64);
  const remapper = setInterval(() => gen.guestOf(remap)!.controls.remapMemory(), 20);
  const vanishing = gen.connectionsOf(vanish);
  await gen.detach(vanish, 'vanish');

  // The others keep their share: the witness, the kicking VM and the remapping VM all move on.
  const keepGoing = [witness, storm, remap].flatMap((cid) => gen.connectionsOf(cid));
  await progressed(keepGoing, snapshot(keepGoing), 32 * 1024);
  while (gen.guestOf(remap)!.controls.remaps < 10) await sleep(20);
  await progressed(keepGoing, snapshot(keepGoing), 16 * 1024);
  clearInterval(remapper);
  gen.guestOf(storm)!.controls.stopKicking();

  // Counted and contained.
  const deafDev = daemon.devices.get(deaf)!;
  t.true(deafDev.attached, 'the guest that stopped consuming stays attached');
  t.is(deafDev.connections, 6, 'its connections stay open');
  t.true(deafDev.hostToGuestQueuedBytes <= 6 * (HOST_TO_GUEST_QUEUE_LIMIT_BYTES + 64 * 1024), `its host-to-guest queue is bounded (${deafDev.hostToGuestQueuedBytes} bytes)`);
  t.true(deafDev.hostBufferedBytes <= 6 * 2 * (CONN_BUF_ALLOC_BYTES + 256 * 1024), `what its host side holds is bounded (${deafDev.hostBufferedBytes} bytes)`);
  t.true(daemon.devices.get(storm)!.stats.kicks.tx > kicksBefore, 'the kicks are counted');
  t.true(gen.guestOf(storm)!.controls.stormKicks > 0);
  const mapsAfter = fx.logs.filter((l) => l.includes(`[cid ${remap}]`) && l.includes('memory table mapped')).length;
  t.true(mapsAfter - mapsBefore >= 10, `every memory table was mapped (${mapsAfter - mapsBefore})`);
  // Its host sockets keep up, so no guest buffer is held when a table changes: nothing is reset.
  t.is(daemon.devices.get(remap)!.connections, 6, 'the remapping guest keeps its connections');
  const gone = daemon.devices.get(vanish)!;
  while (gone.attached || gone.connections > 0) await sleep(20);
  t.true(gone.stats.connectionsClosed >= 6, 'the vanished VM\'s connections are closed and counted');
  await Promise.all(vanishing.map((c) => c.closed));
  t.true(vanishing.every((c) => c.isClosed), 'no connection of the vanished VM is left hanging on either end');
  t.is(gen.dropClosed(vanish), 6);

  // The guest that stopped consuming takes up again where it stopped.
  const deafConns = gen.connectionsOf(deaf);
  gen.guestOf(deaf)!.controls.setDeaf(false);
  await progressed(deafConns, snapshot(deafConns), 8 * 1024);

  const { outcomes, stuck } = await gen.finish([deaf, storm, remap, witness], 120_000);
  t.is(stuck.length, 0, JSON.stringify(stuck.slice(0, 3)));
  t.deepEqual(outcomes.filter((o) => o.problems.length > 0), []);
  t.is(outcomes.length, 24);
  for (const d of daemon.devices.values()) t.is(d.stats.dropped.queueError, 0);
  await backToIdle(t, fx);
});
