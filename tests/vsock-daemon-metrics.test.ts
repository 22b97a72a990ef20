// The daemon's --metrics server: the Prometheus text exposition (format checked line by
// line, names with units, counters ending in _total), per-VM values that match the
// device after real traffic (raw test driver behind a fake vhost-user server), and
// hostile HTTP (malformed requests, a 1 MB request line, other methods and paths, many
// requests on one connection): each gets a clear refusal, and the server and every VM
// are served on.
import test from 'ava';
import { once } from 'node:events';
import { request } from 'node:http';
import { connect } from 'node:net';
import { join } from 'node:path';
import type { DaemonConfig } from '../drivers/virtio-vsock/daemon/config.js';
import { MAX_HEADER_BYTES } from '../drivers/virtio-vsock/daemon/metrics-server.js';
import { acceptOnGuest, hybridConnectLine, type RawGuestDaemon, startRawGuestDaemon } from './support/daemon-raw-guest.js';
import { RawStream } from './support/vsock-raw-driver.js';

function config(dir: string): DaemonConfig {
  return {
    vms: [
      { guestCid: 3, socketPath: join(dir, 'v3.sock'), udsPath: join(dir, 'vm3.vsock') },
      { guestCid: 4, socketPath: join(dir, 'v4.sock'), udsPath: null },
    ],
    forwards: [{ listenHost: '127.0.0.1', listenPort: 0, guestCid: 3, guestPort: 80 }],
    metrics: { host: '127.0.0.1', port: 0, allowRemote: false },
  };
}

function get(port: number, path = '/metrics', method = 'GET'): Promise<{ status: number; type: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** Writes raw bytes, returns what came back until the server closed (or the error code). Never rejects. */
function rawHttp(port: number, bytes: Buffer | string): Promise<{ reply: string; error: string | null }> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port });
    let reply = '';
    let error: string | null = null;
    s.on('data', (c: Buffer) => (reply += c.toString('latin1')));
    s.on('error', (e: NodeJS.ErrnoException) => (error = e.code ?? e.message));
    s.on('close', () => resolve({ reply, error }));
    s.write(bytes);
  });
}

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses the exposition text strictly; throws on any line that is not HELP, TYPE or a sample. */
function parseExposition(text: string): { samples: Sample[]; types: Map<string, string> } {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  const helps = new Set<string>();
  if (!text.endsWith('\n')) throw new Error('the text does not end with a newline');
  for (const line of text.slice(0, -1).split('\n')) {
    let m;
    if ((m = /^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) .+$/.exec(line))) helps.add(m[1]!);
    else if ((m = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram)$/.exec(line))) {
      if (types.has(m[1]!)) throw new Error(`TYPE twice for ${m[1]}`);
      types.set(m[1]!, m[2]!);
    } else if ((m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (-?[0-9.e+]+|NaN|[+-]Inf)$/.exec(line))) {
      const labels: Record<string, string> = {};
      if (m[2]) {
        const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)/y;
        let lm;
        let consumed = 0;
        while ((lm = re.exec(m[2])) !== null) {
          labels[lm[1]!] = lm[2]!;
          consumed = re.lastIndex;
        }
        if (consumed !== m[2].length) throw new Error(`bad labels: ${line}`);
      }
      // A histogram's samples are its name with _bucket (label le), _sum and _count.
      const hist = /^(.*)_(bucket|sum|count)$/.exec(m[1]!);
      const family = hist && types.get(hist[1]!) === 'histogram' ? hist[1]! : m[1]!;
      if (!types.has(family) || !helps.has(family)) throw new Error(`sample before its HELP and TYPE: ${line}`);
      if (family !== m[1]! && hist![2] === 'bucket' && labels.le === undefined) throw new Error(`bucket without le: ${line}`);
      samples.push({ name: m[1]!, labels, value: Number(m[3]) });
    } else throw new Error(`not an exposition line: ${JSON.stringify(line)}`);
  }
  return { samples, types };
}

function value(samples: Sample[], name: string, labels: Record<string, string>): number | undefined {
  return samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;
}

async function setup(t: import('ava').ExecutionContext): Promise<{ fx: RawGuestDaemon; port: number; fwdPort: number }> {
  const fx = await startRawGuestDaemon('vsock-metrics-', config);
  t.teardown(() => fx.close());
  return { fx, port: fx.daemon.metrics!.address().port, fwdPort: fx.daemon.forwards[0]!.address()!.port };
}

test('GET /metrics: the exposition format; per-VM values match the device after traffic; refusals by reason', async (t) => {
  const { fx, port, fwdPort } = await setup(t);
  t.regex(await fx.waitLog(/metrics at http:\/\/127\.0\.0\.1:\d+\/metrics/), /info /);
  // Before the VM is attached: both host ends refuse at once.
  const early = await hybridConnectLine(join(fx.dir, 'vm3.vsock'), 5000);
  early.socket.destroy();
  t.regex(early.line, /^ERR ENOTCONN VM not attached/);
  const tcp = await rawHttp(fwdPort, 'x');
  t.true(tcp.error === 'ECONNRESET' || tcp.reply === '', `reset: ${tcp.error}`);
  // Attached: a hybrid connection with data, a refused guest connect.
  const drv = fx.attach(3);
  const accepted = acceptOnGuest(drv, 5000);
  const { socket } = await hybridConnectLine(join(fx.dir, 'vm3.vsock'), 5000);
  const g = await accepted;
  // Guest to host: the hybrid client is written from guest memory (a view, no copy).
  const back = once(socket, 'data');
  socket.resume();
  await g.write(Buffer.from('hello'));
  t.is(String((await back)[0]), 'hello');
  socket.end('0123456789');
  t.is((await g.readAll()).toString(), '0123456789');
  await new RawStream(drv, 7001, 6999).connect().catch(() => {});
  await drv.sync();

  const res = await get(port);
  t.is(res.status, 200);
  t.is(res.type, 'text/plain; version=0.0.4; charset=utf-8');
  const { samples, types } = parseExposition(res.body);
  for (const [name, type] of types) {
    if (type === 'counter') t.regex(name, /_total$/, `counter ${name}`);
    else t.notRegex(name, /_total$/, `${type} ${name}`);
  }
  const dev = fx.daemon.devices.get(3)!;
  t.is(value(samples, 'vsock_vm_attached', { cid: '3' }), 1);
  t.is(value(samples, 'vsock_vm_attached', { cid: '4' }), 0);
  t.is(value(samples, 'vsock_connections_open', { cid: '3' }), dev.connections);
  t.is(value(samples, 'vsock_connections_opened_total', { cid: '3' }), dev.stats.connectionsOpened);
  t.true(dev.stats.connectionsOpened >= 1);
  t.is(value(samples, 'vsock_payload_bytes_total', { cid: '3', direction: 'host_to_guest' }), 10);
  t.is(value(samples, 'vsock_payload_bytes_total', { cid: '3', direction: 'guest_to_host' }), dev.stats.txBytes);
  t.is(value(samples, 'vsock_packets_total', { cid: '3', direction: 'guest_to_host' }), dev.stats.txPackets);
  t.is(value(samples, 'vsock_packets_total', { cid: '3', direction: 'host_to_guest' }), dev.stats.rxPackets);
  t.is(value(samples, 'vsock_guest_packets_refused_total', { cid: '3', reason: 'refused' }), 1);
  t.is(value(samples, 'vsock_guest_packets_refused_total', { cid: '4', reason: 'creditViolation' }), 0);
  t.is(value(samples, 'vsock_host_clients_refused_total', { cid: '3', end: 'hybrid', reason: 'notAttached' }), 1);
  t.is(value(samples, 'vsock_host_clients_refused_total', { cid: '3', end: 'tcp', listen: `127.0.0.1:${fwdPort}`, guest_port: '80', reason: 'notAttached' }), 1);
  t.is(value(samples, 'vsock_host_clients_connected_total', { cid: '3', end: 'hybrid' }), 1);
  t.is(value(samples, 'vsock_guest_connects_total', { cid: '3', result: 'refused' }), 1);
  t.true(value(samples, 'vsock_ring_kicks_total', { cid: '3', queue: 'tx' })! > 0);
  t.true(value(samples, 'vsock_ring_interrupts_total', { cid: '3', queue: 'rx' })! > 0);
  t.is(value(samples, 'vsock_credit_stalls_total', { cid: '3', direction: 'host_to_guest' }), 0);
  t.is(value(samples, 'vsock_guest_to_host_bytes_total', { cid: '3', how: 'view' }), 5);
  t.is(value(samples, 'vsock_guest_to_host_bytes_total', { cid: '3', how: 'copy' }), 0);
  t.is(value(samples, 'vsock_tx_chains_held', { cid: '3' }), 0);
  // The 10 host bytes came through the hybrid socket: read into the reused buffer, or queued as written (the bytes after the CONNECT line).
  t.is(value(samples, 'vsock_host_to_guest_bytes_total', { cid: '3', how: 'copied' }), dev.stats.hostBytesCopied);
  t.is(value(samples, 'vsock_host_to_guest_bytes_total', { cid: '3', how: 'as_written' }), dev.stats.hostBytesAsWritten);
  t.is(dev.stats.hostBytesCopied + dev.stats.hostBytesAsWritten, 10);
  t.true(value(samples, 'process_resident_memory_bytes', {})! > 1e6);
  t.true(value(samples, 'nodejs_heap_size_used_bytes', {})! > 0);
  // Event loop: busy and idle time, and the delay histogram (cumulative buckets, +Inf = count).
  t.true(value(samples, 'nodejs_eventloop_time_seconds_total', { state: 'active' })! > 0);
  t.true(value(samples, 'nodejs_eventloop_time_seconds_total', { state: 'idle' })! >= 0);
  t.is(types.get('nodejs_eventloop_delay_seconds'), 'histogram');
  const buckets = samples.filter((s) => s.name === 'nodejs_eventloop_delay_seconds_bucket');
  t.is(buckets.at(-1)!.labels.le, '+Inf');
  for (let i = 1; i < buckets.length; i++) t.true(buckets[i]!.value >= buckets[i - 1]!.value, `bucket le=${buckets[i]!.labels.le} is cumulative`);
  t.is(buckets.at(-1)!.value, value(samples, 'nodejs_eventloop_delay_seconds_count', {})!);
  t.true(value(samples, 'nodejs_eventloop_delay_seconds_sum', {})! >= 0);
  t.is(value(samples, 'vsock_metrics_http_requests_total', { result: 'served' }), 1);
  // HEAD and / are answered too.
  t.is((await get(port, '/metrics', 'HEAD')).status, 200);
  t.regex((await get(port, '/')).body, /\/metrics/);
});

test('hostile HTTP: each request refused with a clear status, counted, logged; the server and the VMs go on', async (t) => {
  const { fx, port } = await setup(t);
  const cases: Array<[string, Buffer | string, RegExp]> = [
    ['garbage', 'GARBAGE\r\n\r\n', /^HTTP\/1\.1 400 Bad Request\r\n[\s\S]*malformed request/],
    ['a header without a colon', 'GET /metrics HTTP/1.1\r\nHost: x\r\nnocolon\r\n\r\n', /^HTTP\/1\.1 400 /],
    ['a bad HTTP version', 'GET /metrics HTTP/9\r\n\r\n', /^HTTP\/1\.1 400 /],
    ['NUL bytes', Buffer.from('GET /\0\0 HTTP/1.1\r\n\r\n'), /^HTTP\/1\.1 400 /],
    ['headers over the limit', `GET /metrics HTTP/1.1\r\nX-Big: ${'a'.repeat(MAX_HEADER_BYTES * 2)}\r\n\r\n`, /^HTTP\/1\.1 431 Request Header Fields Too Large\r\n[\s\S]*over 8192 bytes/],
    ['POST', 'POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello', /^HTTP\/1\.1 405 Method Not Allowed\r\n[\s\S]*Allow: GET, HEAD/],
    ['another path', 'GET /etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', /^HTTP\/1\.1 404 Not Found\r\n/],
  ];
  let refused = 0;
  for (const [name, bytes, reply] of cases) {
    const r = await rawHttp(port, bytes);
    t.regex(r.reply, reply, name);
    refused++;
    t.is(fx.daemon.metrics!.stats.badRequests, refused, name);
  }
  // A 1 MB request line: refused (431) before it is read whole; the reply may be lost to
  // the reset of the unread rest, the refusal is counted and logged either way.
  const huge = await rawHttp(port, `GET /${'a'.repeat(1 << 20)} HTTP/1.1\r\nHost: x\r\n\r\n`);
  t.true(/^HTTP\/1\.1 431 /.test(huge.reply) || huge.error !== null, `reply ${huge.reply.slice(0, 40)} error ${huge.error}`);
  t.is(fx.daemon.metrics!.stats.badRequests, refused + 1);
  t.regex(await fx.waitLog(/431 request line and headers over 8192 bytes/), /warn .*\[daemon\] metrics: refused a request from 127\.0\.0\.1:\d+/);
  // 200 scrapes on one keep-alive connection, then a normal scrape: all served.
  const many = await rawHttp(port, 'GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n'.repeat(199) + 'GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  t.is((many.reply.match(/^HTTP\/1\.1 200 OK/gm) ?? []).length, 200);
  const after = await get(port);
  t.is(after.status, 200);
  t.regex(after.body, /vsock_metrics_http_requests_total\{result="refused"\} 8/);
  // The VM is served on.
  const drv = fx.attach(3);
  const accepted = acceptOnGuest(drv, 5000);
  const { line, socket } = await hybridConnectLine(join(fx.dir, 'vm3.vsock'), 5000);
  const g = await accepted;
  socket.end('still here');
  t.regex(line, /^OK \d+$/);
  t.is((await g.readAll()).toString(), 'still here');
});
