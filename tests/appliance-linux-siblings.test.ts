// Our driver against Linux's through sibling routing: the appliance guest (node with our
// TypeScript vsock driver on uio, CID 5) and a stock-Linux guest (CID 3), both served by
// one vhost-user-vsock daemon in one group. Each side connects to the other, stream and
// SEQPACKET, and every byte comes back SHA-256-checked (stream) or message by message
// (SEQPACKET: Linux's side is tests/support/vsock-seqpacket-peer.c). Boots both guests
// once, under TCG.
import test from 'ava';
import { createHash } from 'node:crypto';
import { pattern } from '../appliance/guest/pattern.js';
import { startLinuxGuest, type LinuxGuest } from '../appliance/qemu/start.js';
import { startSiblingDaemon, type SiblingDaemon } from './support/linux-sibling-guests.js';
import { ADDON, Cleanup, bundlePath, guestTestsReady, launchGuest, resultLine } from './support/qemu-guest.js';
import { buildSeqpacketPeer } from './support/vsock-test-build.js';
import type { QemuInstance } from '../appliance/qemu/launch.js';

const SAFETY_TIMEOUT_MS = 25 * 60 * 1000; // kills a stuck QEMU; not an assertion
const LINUX_CID = 3;
const OURS_CID = 5;
const BYTES = 2 * 1024 * 1024;
const SIZES = [1, 100, 4096, 4097, 65536, 65537, 200_000];
const bundle = bundlePath('vsock-sibling-peer.js');

interface Result {
  cid: number;
  stream: { sent: number; sentSha256: string; back: number; backSha256: string };
  seqpacket: { sent: number; bad: number[] };
  passive: { streamBytes: number; messages: number[] };
}

let fx: SiblingDaemon | null = null;
const cleanup = new Cleanup();
let linux: LinuxGuest | null = null;
let ours: QemuInstance | null = null;

const guestTest = guestTestsReady('appliance-linux-siblings', [bundle, ADDON]) ? test.serial : test.skip;

test.after.always(async (t) => {
  if (linux?.qemu.running) await linux.qemu.stop();
  await cleanup.run();
  if (fx) t.log(`daemon log (last lines):\n${await fx.dispose()}`);
});

guestTest('the appliance guest (our driver) and a Linux guest, siblings of one daemon: stream and SEQPACKET both ways, every byte checked', async (t) => {
  t.timeout(12 * 60_000); // two TCG boots and the transfers
  const peer = await buildSeqpacketPeer();
  fx = await startSiblingDaemon('appliance-linux-siblings-', [LINUX_CID, OURS_CID]);
  linux = await startLinuxGuest({
    image: { name: 'linux-guest-seqpacket-peer', files: [{ guest: '/usr/bin/vsock-seqpacket-peer', host: peer, mode: 0o755 }] },
    launch: { vhostUserVsock: { socket: fx.socket(LINUX_CID) }, timeoutMs: SAFETY_TIMEOUT_MS },
  });
  const sh = linux.shell;
  // Linux's echoes for the connections our driver opens.
  await sh.runBackground('socat -b 65536 -t 600 VSOCK-LISTEN:2000 EXEC:cat');
  const seqEcho = await sh.runBackground('vsock-seqpacket-peer echo 2001');
  ours = await launchGuest('q35', { main: bundle, args: [`--peer=${LINUX_CID}`, `--bytes=${BYTES}`, `--sizes=${SIZES.join(',')}`], vhostUserVsock: { socket: fx.socket(OURS_CID) }, timeoutMs: SAFETY_TIMEOUT_MS }, cleanup);
  await ours.waitForLine(`listening on cid ${OURS_CID}`, 10 * 60 * 1000);

  // Linux -> ours: a stream through our echo, and SEQPACKET messages through our message echo.
  const streamRun = await sh.run(`head -c ${BYTES} /dev/urandom > /tmp/d && socat -b 65536 -t 600 VSOCK-CONNECT:${OURS_CID}:1234 'OPEN:/tmp/d!!CREATE:/tmp/back'; echo status=$?; sha256sum /tmp/d /tmp/back | cut -d' ' -f1; wc -c < /tmp/back`, { timeoutMs: 10 * 60 * 1000 });
  t.log(`Linux -> ours stream: ${streamRun.output.replace(/\n/g, ' | ')}`);
  const [status, shaSent, shaBack, backBytes] = streamRun.output.split('\n');
  t.is(status, 'status=0');
  t.is(shaBack, shaSent);
  t.is(Number(backBytes), BYTES);
  const seqRun = await sh.run(`vsock-seqpacket-peer send ${OURS_CID} 1235 ${SIZES.join(' ')}`, { timeoutMs: 10 * 60 * 1000 });
  t.log(`Linux -> ours SEQPACKET: ${seqRun.output}`);
  t.is(seqRun.output, `ok ${SIZES.length}`);

  // Ours -> Linux: our program's own report, once both its transfers and both echoes are done.
  await ours.waitForLine('vsock-sibling-peer-result: ', 8 * 60 * 1000);
  const r = resultLine<Result>(ours.console(), 'vsock-sibling-peer-result: ');
  t.log(`appliance result: ${JSON.stringify(r)}`);
  t.truthy(r);
  t.is(r!.stream.back, BYTES);
  t.is(r!.stream.sentSha256, createHash('sha256').update(pattern(1, BYTES)).digest('hex'));
  t.is(r!.stream.backSha256, r!.stream.sentSha256);
  t.deepEqual(r!.seqpacket, { sent: SIZES.length, bad: [] });
  t.is(r!.passive.streamBytes, BYTES);
  t.deepEqual(r!.passive.messages, SIZES); // one message each, boundaries kept
  const echoed = await sh.run(`cat ${seqEcho.logFile}`);
  t.regex(echoed.output, new RegExp(`echoed ${SIZES.length} messages`));
  const stats = [LINUX_CID, OURS_CID].map((cid) => fx!.daemon.devices.get(cid)!.stats);
  t.log(`sibling bytes sent: Linux ${stats[0]!.siblingBytes}, ours ${stats[1]!.siblingBytes}; refused: ${JSON.stringify(stats.map((s) => Object.fromEntries(Object.entries(s.dropped).filter(([, n]) => n > 0))))}`);
});
