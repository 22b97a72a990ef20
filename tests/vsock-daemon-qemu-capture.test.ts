// The daemon watched while a stock Linux guest (QEMU 7.2, its own virtio-vsock driver)
// uses it: capture (--pcap) decoded by tshark matches, byte for byte, what went through
// the hybrid socket both ways, with the ports and ops of each connection; the metrics
// agree with the device; the debug log shows each connection's REQUEST and RESPONSE.
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { get } from 'node:http';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startLinuxGuest, type LinuxGuest } from '../appliance/qemu/start.js';
import { startDaemon } from '../drivers/virtio-vsock/daemon/daemon.js';
import { VSOCK_OP_REQUEST, VSOCK_OP_RESPONSE, VSOCK_OP_RW } from '../drivers/virtio-vsock/header.js';
import { hybridConnectLine, readToEnd } from './support/daemon-raw-guest.js';
import { ensureTshark, tsharkBytes, tsharkFields } from './support/tshark.js';

const SAFETY_TIMEOUT_MS = 10 * 60 * 1000; // kills a stuck QEMU; not an assertion
const FIELDS = ['vsock.src_cid', 'vsock.src_port', 'vsock.dst_cid', 'vsock.dst_port', 'vsock.op', 'vsock.virtio.op', 'vsock.virtio.len', 'vsock.payload'];

function scrape(url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    get(url, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve(body));
    }).on('error', reject);
  });
}

test.before(() => {
  ensureTshark();
});

test.serial('a Linux guest through the daemon: tshark reads back what was sent both ways; metrics and debug log agree', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vsock-qemu-capture-'));
  const socket = join(dir, 'vhost.sock');
  const uds = join(dir, 'vm.vsock');
  const pcap = join(dir, 'guest.pcap');
  const logs: string[] = [];
  const daemon = await startDaemon(
    { vms: [{ guestCid: 3, socketPath: socket, udsPath: uds }], forwards: [], pcapPath: pcap, logLevel: 'debug', metrics: { host: '127.0.0.1', port: 0, allowRemote: false } },
    { log: (l) => logs.push(l) },
  );
  const hostApp = createServer({ allowHalfOpen: true }, (s) => {
    void readToEnd(s).then((b) => s.end(Buffer.concat([Buffer.from('host got '), b])));
  });
  await new Promise<void>((r) => hostApp.listen(`${uds}_5000`, r));
  let g: LinuxGuest | null = null;
  t.teardown(async () => {
    if (g?.qemu.running) await g.qemu.stop();
    await new Promise<void>((r) => hostApp.close(() => r()));
    await daemon.close();
    rmSync(dir, { recursive: true, force: true });
    if (!t.passed) t.log(logs.slice(-60).join('\n'));
  });
  g = await startLinuxGuest({ launch: { vhostUserVsock: { socket }, timeoutMs: SAFETY_TIMEOUT_MS } });

  // Guest -> host: CID 2 port 5000 reaches <uds>_5000.
  t.deepEqual(await g.shell.run('echo hello | socat -t 5 - VSOCK-CONNECT:2:5000', { timeoutMs: 60000 }), { output: 'host got hello', status: 0 });
  // Host -> guest: 256 KiB to an echo (several packets each way, credit both ways).
  await g.shell.runBackground('socat -t 30 VSOCK-LISTEN:6001,reuseaddr,fork EXEC:cat');
  const data = randomBytes(256 * 1024);
  let conn: { line: string; socket: Socket } | null = null;
  for (let i = 0; i < 120 && !conn; i++) {
    const c = await hybridConnectLine(uds, 6001);
    if (c.line.startsWith('OK ')) conn = c;
    else {
      c.socket.destroy();
      await new Promise((r) => setTimeout(r, 500)); // the guest's listener is not up yet (a poll, not a verdict)
    }
  }
  t.truthy(conn, 'the guest listener answered');
  const hostPort = Number(/^OK (\d+)$/.exec(conn!.line)![1]);
  const back = readToEnd(conn!.socket);
  conn!.socket.end(data);
  const echoed = await back;
  t.true(echoed.equals(data), 'the echo came back whole');

  const dev = daemon.devices.get(3)!;
  // tshark runs synchronously: no packet moves between the decode and the reading of the counters.
  const decoded = tsharkFields(pcap, FIELDS);
  t.is(decoded.status, 0, decoded.stderr);
  const frames = decoded.rows.map((r) => Object.fromEntries(FIELDS.map((f, i) => [f, r[i] ?? ''])) as Record<string, string>);
  t.is(frames.length, dev.stats.txPackets + dev.stats.rxPackets, 'every packet moved is in the capture');
  const on = (src: number, dst: number) => frames.filter((f) => Number(f['vsock.src_port']) === src && Number(f['vsock.dst_port']) === dst);
  const payload = (src: number, dst: number): Buffer => Buffer.concat(on(src, dst).filter((f) => Number(f['vsock.virtio.op']) === VSOCK_OP_RW).map((f) => tsharkBytes(f['vsock.payload'])));
  t.is(Number(on(hostPort, 6001)[0]!['vsock.virtio.op']), VSOCK_OP_REQUEST);
  t.is(on(hostPort, 6001)[0]!['vsock.src_cid'], '2');
  t.is(on(hostPort, 6001)[0]!['vsock.dst_cid'], '3');
  t.is(Number(on(6001, hostPort)[0]!['vsock.virtio.op']), VSOCK_OP_RESPONSE);
  t.true(payload(hostPort, 6001).equals(data), 'host -> guest payload bytes in the capture are what was sent');
  t.true(payload(6001, hostPort).equals(data), 'guest -> host payload bytes are the echo');
  const guestReq = frames.find((f) => Number(f['vsock.virtio.op']) === VSOCK_OP_REQUEST && f['vsock.src_cid'] === '3' && f['vsock.dst_port'] === '5000');
  t.truthy(guestReq, "the guest's REQUEST to host port 5000");
  const guestPort = Number(guestReq!['vsock.src_port']);
  t.is(payload(guestPort, 5000).toString(), 'hello\n');
  t.is(payload(5000, guestPort).toString(), 'host got hello\n');

  const text = await scrape(daemon.metrics!.url);
  t.regex(text, /^vsock_vm_attached\{cid="3"\} 1$/m);
  t.regex(text, new RegExp(`^vsock_payload_bytes_total\\{cid="3",direction="host_to_guest"\\} ${dev.stats.rxBytes}$`, 'm'));
  t.regex(text, new RegExp(`^vsock_payload_bytes_total\\{cid="3",direction="guest_to_host"\\} ${dev.stats.txBytes}$`, 'm'));
  t.regex(text, /^vsock_ring_kicks_total\{cid="3",queue="tx"\} [1-9]\d*$/m);
  t.regex(text, /^vsock_ring_interrupts_total\{cid="3",queue="rx"\} [1-9]\d*$/m);
  // Packets may still move (late credit updates): compare within the one scrape.
  const num = (re: RegExp): number => Number(re.exec(text)?.[1]);
  const moved = num(/^vsock_packets_total\{cid="3",direction="guest_to_host"\} (\d+)$/m) + num(/^vsock_packets_total\{cid="3",direction="host_to_guest"\} (\d+)$/m);
  t.is(num(/^vsock_capture_packets_total\{file=".*guest\.pcap"\} (\d+)$/m), moved);
  t.true(logs.some((l) => l.includes(`debug [cid 3] host -> guest REQUEST 2:${hostPort} -> 3:6001`)));
  t.true(logs.some((l) => l.includes(`debug [cid 3] guest -> host RESPONSE 3:6001 -> 2:${hostPort}`)));
  t.true(logs.some((l) => l.includes(`debug [cid 3] guest -> host REQUEST 3:${guestPort} -> 2:5000`)));
  t.true(logs.some((l) => /info  \[cid 3\] VM attached/.test(l)));
  await g.shell.poweroff();
});
