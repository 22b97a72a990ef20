// Issue 4's QEMU matrix, part 1: our vhost-user-vsock daemon (startDaemon, the real
// kernel/vhost-user server) as QEMU 7.2's vsock device, driven by a stock Linux guest's
// own virtio-vsock driver (socat in the guest). One boot for the whole file:
//   - malformed vhost-user messages to the daemon's socket (before QEMU connects): the
//     reason is logged, that client dropped, the daemon serves the QEMU that follows;
//   - 64 MiB host->guest through the hybrid socket and through a TCP forward, 64 MiB
//     guest->host through <uds>_P, SHA-256 equal on both ends;
//   - 50 connections at once, echoed, each checked;
//   - RST when nothing listens, both directions;
//   - half-close both ways.
// Descriptor shapes (split/single/indirect) are covered in-process by
// tests/vsock-device-basic.test.ts; the vhost-user refusals one by one by
// tests/vhost-user-server.test.ts.
import test from 'ava';
import { closeSync, openSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Socket } from 'node:net';
import { startLinuxGuest, type LinuxGuest } from '../appliance/qemu/start.js';
import { encodeMemTable, encodeMessage, encodeVringFile } from '../kernel/vhost-user/codec.js';
import { VhostUserFrontend } from '../kernel/vhost-user/frontend-client.js';
import { Request, VERSION } from '../kernel/vhost-user/protocol.js';
import {
  GUEST_CID,
  collect,
  deterministicBytes,
  deterministicChunks,
  deterministicSha256,
  echoConnections,
  hybridConnect,
  hybridConnectRetry,
  HybridRefused,
  receiveFromGuest,
  sendToGuest,
  sha256Hex,
  startTestDaemon,
  tcpConnect,
  waitGuestListening,
  withGuestEcho,
  writeChunks,
  type DaemonFixture,
} from './support/linux-vsock-guest.js';

const SAFETY_TIMEOUT_MS = 25 * 60 * 1000; // kills a stuck QEMU; not an assertion
const BIG = 64 * 1024 * 1024;
const SEED = 'vhost-vsock-linux 64 MiB';
const FWD_BIG = 7003; // guest port behind forward 0
const FWD_NOBODY = 7998; // guest port behind forward 1, nothing listens there

let fx: DaemonFixture | null = null;
let guest: Promise<LinuxGuest> | null = null;

test.before(async () => {
  fx = await startTestDaemon('vhost-vsock-linux-data-', [FWD_BIG, FWD_NOBODY]);
});

test.after.always(async (t) => {
  const g = await guest?.catch(() => null);
  if (g?.qemu.running) await g.qemu.stop();
  if (fx) t.log(`daemon log (last 40 lines):\n${await fx.dispose()}`);
});

function bootGuest(): Promise<LinuxGuest> {
  guest ??= startLinuxGuest({ launch: { vhostUserVsock: { socket: fx!.socket }, timeoutMs: SAFETY_TIMEOUT_MS } });
  return guest;
}

/** A host listener at <uds>_port (guest -> host, CID 2 port `port`). */
const hostListen = (port: number, onSocket: (s: Socket) => void): Promise<void> => fx!.hostListen(port, onSocket);

test.serial('malformed vhost-user messages to the daemon: reason logged, client dropped, daemon goes on (QEMU follows)', async (t) => {
  const cases: Array<{ name: string; send: (c: VhostUserFrontend) => void; log: RegExp }> = [
    { name: 'unknown request', send: (c) => c.sendRaw(encodeMessage(99, VERSION)), log: /front end dropped: .*unknown request 99/ },
    { name: 'wrong size', send: (c) => c.sendRaw(encodeMessage(Request.SET_FEATURES, VERSION, Buffer.alloc(4))), log: /front end dropped: .*SET_FEATURES \(2\): payload of 4 bytes, expected 8/ },
    { name: 'missing fd', send: (c) => c.sendRaw(encodeMessage(Request.SET_VRING_KICK, VERSION, encodeVringFile(0, false))), log: /front end dropped: .*ring 0: no fd came with the message/ },
    {
      name: 'a region that does not fit',
      send: (c) => {
        // One 1 GiB region backed by a 4 KiB file.
        const path = join(fx!.dir, 'small-ram');
        writeFileSync(path, Buffer.alloc(4096));
        const fd = openSync(path, 'r+');
        try {
          c.sendRaw(encodeMessage(Request.SET_MEM_TABLE, VERSION, encodeMemTable([{ guestPhysAddr: 0, memorySize: 2 ** 30, userspaceAddr: 0x7f0000000000, mmapOffset: 0 }])), [fd]);
        } finally {
          closeSync(fd);
        }
      },
      log: /front end dropped: .*does not fit its fd/,
    },
  ];
  for (const k of cases) {
    const c = VhostUserFrontend.connect(fx!.socket);
    try {
      // A well-formed exchange first: this client is being served.
      t.true((await c.getFeatures()) !== 0n, k.name);
      k.send(c);
      t.regex(await fx!.waitLog(k.log), k.log, k.name);
      const closed = await c.socket.readExactly(1).then(
        (r) => r === null,
        (e: { code?: string }) => e.code === 'ECONNRESET',
      );
      t.true(closed, `${k.name}: the daemon closed that client`);
    } finally {
      c.close();
    }
  }
  // The daemon still serves: the guest boots with a working vsock device (next tests use it).
  const g = await bootGuest();
  t.deepEqual(await g.shell.run('ls /sys/bus/virtio/drivers/vmw_vsock_virtio_transport/ | grep -c virtio', { timeoutMs: 60000 }), { output: '1', status: 0 });
});

test.serial('64 MiB host -> guest through the hybrid socket, SHA-256 equal (the guest keeps a copy)', async (t) => {
  t.timeout(12 * 60_000);
  const g = await bootGuest();
  const port = 7001;
  const dev = fx!.daemon.devices.get(GUEST_CID)!;
  const before = { bytes: dev.stats.rxBytes, packets: dev.stats.rxPackets };
  const { sent, guest: r, echoedBytes } = await sendToGuest(g.shell, fx!.uds, port, SEED, BIG, 35 * 60_000);
  t.is(sent.bytes, BIG);
  t.is(r.status, 0, r.output);
  t.is(r.output.split(/\s+/)[0], sent.sha256);
  t.is(sent.sha256, deterministicSha256(SEED, BIG));
  t.is(echoedBytes, 0);
  // Every payload byte went to the guest exactly once (rx = device -> guest).
  t.is(dev.stats.rxBytes - before.bytes, BIG);
  const packets = dev.stats.rxPackets - before.packets;
  t.log(`hybrid host->guest: ${BIG} bytes in ${packets} rx packets (${Math.round(BIG / packets)} bytes each on average: Linux posts small rx buffers), sha256 ${sent.sha256}`);
});

test.serial('64 MiB guest -> host through <uds>_P, SHA-256 equal', async (t) => {
  t.timeout(12 * 60_000);
  const g = await bootGuest();
  const port = 7002;
  const dev = fx!.daemon.devices.get(GUEST_CID)!;
  const before = { bytes: dev.stats.txBytes, packets: dev.stats.txPackets };
  const { got: c, guest: r } = await receiveFromGuest(g.shell, hostListen, port, 35 * 60_000);
  t.regex(r.output, /status=0/);
  t.is(c.how, 'end');
  t.is(c.bytes, BIG);
  t.is(c.sha256, deterministicSha256(SEED, BIG));
  t.true(r.output.includes(c.sha256), 'the guest hashed the same bytes');
  t.is(dev.stats.txBytes - before.bytes, BIG);
  const packets = dev.stats.txPackets - before.packets;
  t.log(`guest->host: ${BIG} bytes in ${packets} tx packets (control packets included)`);
});

test.serial('64 MiB host -> guest through a TCP forward, SHA-256 equal', async (t) => {
  t.timeout(12 * 60_000);
  const g = await bootGuest();
  // Each connection's bytes go to sha256sum, whose answer comes back on the same connection.
  const job = await g.shell.runBackground(`socat -t 600 -b 65536 VSOCK-LISTEN:${FWD_BIG},reuseaddr,fork SYSTEM:'sha256sum'`);
  try {
    await waitGuestListening(fx!.uds, FWD_BIG);
    const s = await tcpConnect(fx!.daemon.forwards[0]!.address()!.port);
    const back = collect(s);
    const sent = await writeChunks(s, deterministicChunks(SEED + ' tcp', BIG));
    const r = await back;
    t.is(r.how, 'end');
    t.is(r.data!.toString(), `${sent.sha256}  -\n`);
    t.is(sent.sha256, deterministicSha256(SEED + ' tcp', BIG));
  } finally {
    await g.shell.run(`kill ${job.pid}; pkill -f 'VSOCK-LISTEN:${FWD_BIG}' ; true`);
  }
});

test.serial('50 connections at once through the hybrid socket, each echoed and checked', async (t) => {
  t.timeout(12 * 60_000);
  const g = await bootGuest();
  const port = 7010;
  t.deepEqual(await withGuestEcho(g.shell, fx!.uds, port, () => echoConnections(fx!.uds, port, 50, 'conn')), []);
  const dev = fx!.daemon.devices.get(GUEST_CID)!;
  t.is(dev.stats.dropped.creditViolation, 0);
  t.is(dev.stats.dropped.protocolViolation, 0);
});

test.serial('RST when nothing listens: host CONNECT to an empty guest port, TCP forward to it, guest connect to an empty host port', async (t) => {
  t.timeout(12 * 60_000);
  const g = await bootGuest();
  // Host -> guest, hybrid: an ERR reply (the guest's RST), not an OK and not silence.
  const err = await hybridConnect(fx!.uds, 7999).then(
    () => null,
    (e: unknown) => e,
  );
  t.true(err instanceof HybridRefused);
  t.regex((err as HybridRefused).reply, /^ERR ECONNREFUSED|^ERR ECONNRESET/);
  // Host -> guest, TCP forward: the accepted TCP connection is closed without data.
  const s = await tcpConnect(fx!.daemon.forwards[1]!.address()!.port);
  const r = await collect(s);
  t.is(r.bytes, 0);
  t.log(`TCP forward to an empty guest port: ${r.how}`);
  // Guest -> host: nothing at <uds>_7997, the connect fails with a refusal (not a 2 s connect timeout).
  const refused = await g.shell.run('socat -u - VSOCK-CONNECT:2:7997; echo status=$?', { timeoutMs: 120_000 });
  t.regex(refused.output, /Connection reset by peer|Connection refused/);
  t.regex(refused.output, /status=1$/);
  t.notRegex(refused.output, /timed out/i);
});

test.serial('half-close: host end() reaches the guest as EOF and the guest still answers', async (t) => {
  t.timeout(12 * 60_000);
  const g = await bootGuest();
  const port = 7020;
  // The guest reads to EOF (sha256sum), then writes its answer on the same connection.
  const job = await g.shell.runBackground(`socat -t 600 VSOCK-LISTEN:${port},reuseaddr,fork SYSTEM:'sha256sum; echo after-eof'`);
  try {
    const data = deterministicBytes('half-close host', 300 * 1024);
    const s = await hybridConnectRetry(fx!.uds, port);
    const back = collect(s);
    await writeChunks(s, [data]); // ends our write side
    const r = await back;
    t.is(r.how, 'end');
    t.is(r.data!.toString(), `${sha256Hex(data)}  -\nafter-eof\n`);
  } finally {
    await g.shell.run(`kill ${job.pid}; pkill -f 'VSOCK-LISTEN:${port}' ; true`);
  }
});

test.serial("half-close: the guest's SHUT_WR is end-of-stream on the host, which keeps sending", async (t) => {
  t.timeout(12 * 60_000);
  const g = await bootGuest();
  const port = 7021;
  const reply = deterministicBytes('half-close guest', 1024 * 1024);
  const seen: { before: string; endedBeforeReply: boolean }[] = [];
  await hostListen(port, (s) => {
    const parts: Buffer[] = [];
    s.on('data', (c: Buffer) => parts.push(c));
    s.on('error', () => {});
    s.once('end', () => {
      // The guest has shut its write side; we have not written a byte yet: send 1 MiB now.
      seen.push({ before: Buffer.concat(parts).toString(), endedBeforeReply: s.bytesWritten === 0 });
      void writeChunks(s, [reply]).catch(() => {});
    });
  });
  // stdin "hello" then EOF: socat shuts down the vsock write side and keeps reading until the host ends.
  const r = await g.shell.run(`echo hello | socat -t 600 -b 65536 - VSOCK-CONNECT:2:${port} | sha256sum`, { timeoutMs: 10 * 60_000 });
  t.is(r.status, 0, r.output);
  t.deepEqual(seen, [{ before: 'hello\n', endedBeforeReply: true }]);
  t.is(r.output.split(/\s+/)[0], sha256Hex(reply));
});

test.serial('the device counted no guest misbehaviour over the whole file', async (t) => {
  const dev = fx!.daemon.devices.get(GUEST_CID)!;
  t.is(dev.stats.dropped.creditViolation, 0);
  t.is(dev.stats.dropped.protocolViolation, 0);
  t.is(dev.stats.dropped.lengthMismatch, 0);
  t.is(dev.stats.dropped.internalError, 0);
  const g = await bootGuest();
  await g.shell.poweroff();
});
