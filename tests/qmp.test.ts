// The QMP client (appliance/qemu/qmp.ts) against a scripted server on a Unix socket:
// greeting and capabilities, answers in order, QEMU's errors with their class, events,
// a line that is not QMP (refused with its number, the connection goes on), a server
// that goes away, and no server at all.
import test from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { type Server, type Socket, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { QmpError, type QmpEvent, connectQmp, parseQmpLine } from '../appliance/qemu/qmp.js';

const dir = mkdtempSync(join(tmpdir(), 'tsvirtio-qmp-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;

/** A server that greets, then answers each command line with what `reply` returns (lines to send). */
async function fakeQemu(reply: (cmd: { execute: string; arguments?: Record<string, unknown> }, sock: Socket) => string[]): Promise<{ path: string; server: Server; seen: string[] }> {
  const path = join(dir, `qmp-${n++}.sock`);
  const seen: string[] = [];
  const server = createServer((sock) => {
    sock.write('{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}}, "capabilities": []}}\r\n');
    let buf = '';
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => {
      buf += d;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        const cmd = JSON.parse(line) as { execute: string; arguments?: Record<string, unknown> };
        seen.push(cmd.execute);
        if (cmd.execute === 'qmp_capabilities') sock.write('{"return": {}}\r\n');
        else for (const l of reply(cmd, sock)) sock.write(`${l}\r\n`);
      }
    });
  });
  await new Promise<void>((r) => server.listen(path, r));
  return { path, server, seen };
}

test('commands are answered in order; QEMU\'s errors carry their class; events reach subscribers', async (t) => {
  const q = await fakeQemu((cmd) => {
    if (cmd.execute === 'query-status') return ['{"event": "RESUME", "data": {}, "timestamp": {"seconds": 1, "microseconds": 2}}', '{"return": {"status": "running", "running": true}}'];
    if (cmd.execute === 'device_add') return [`{"error": {"class": "GenericError", "desc": "Bus '${String(cmd.arguments?.['bus'])}' not found"}}`];
    return ['{"return": {}}'];
  });
  const qmp = await connectQmp(q.path);
  const events: QmpEvent[] = [];
  qmp.onEvent((e) => events.push(e));
  const [status, cont] = await Promise.all([qmp.execute<{ status: string }>('query-status'), qmp.execute('cont')]);
  t.is(status.status, 'running');
  t.deepEqual(cont, {});
  t.deepEqual(events, [{ event: 'RESUME', data: {} }]);
  const err = await t.throwsAsync(qmp.execute('device_add', { driver: 'x', bus: 'nope' }), { instanceOf: QmpError });
  t.is(err!.code, 'ERR_QMP_COMMAND');
  t.is(err!.qemuClass, 'GenericError');
  t.is(err!.message, "QEMU refused device_add: Bus 'nope' not found (GenericError)");
  t.deepEqual(q.seen, ['qmp_capabilities', 'query-status', 'cont', 'device_add']);
  qmp.close();
  await t.throwsAsync(qmp.execute('cont'), { message: /is closed: cannot run cont/ });
  q.server.close();
});

test('a line that is not QMP: the waiting command fails with its line number, the next one works', async (t) => {
  let calls = 0;
  const q = await fakeQemu(() => (calls++ === 0 ? ['{"return": {} oops'] : ['{"return": 7}']));
  const qmp = await connectQmp(q.path);
  const err = await t.throwsAsync(qmp.execute('query-migrate'), { instanceOf: QmpError });
  t.is(err!.code, 'ERR_QMP_PROTOCOL');
  t.regex(err!.message, /^QMP line 3 is not JSON \(.*\): "\{\\"return\\": \{\} oops"$/);
  t.is(await qmp.execute('query-migrate'), 7);
  t.is(qmp.protocolErrors.length, 1);
  qmp.close();
  q.server.close();
});

test('the server goes away: commands waiting for an answer fail with ERR_QMP_CLOSED', async (t) => {
  const q = await fakeQemu((_cmd, sock) => {
    sock.destroy();
    return [];
  });
  const qmp = await connectQmp(q.path);
  const err = await t.throwsAsync(qmp.execute('migrate', { uri: 'exec:cat > /dev/null' }), { instanceOf: QmpError });
  t.is(err!.code, 'ERR_QMP_CLOSED');
  t.regex(err!.message, /closed before QEMU answered migrate/);
  q.server.close();
});

test('no server: ERR_QMP_CONNECT after the timeout, or at once when the caller gives up', async (t) => {
  const path = join(dir, 'nobody.sock');
  const err = await t.throwsAsync(connectQmp(path, { timeoutMs: 200 }), { instanceOf: QmpError });
  t.is(err!.code, 'ERR_QMP_CONNECT');
  t.regex(err!.message, /no QMP server on .*nobody\.sock within 200 ms \(cannot connect .*ENOENT\)/);
  const gone = await t.throwsAsync(connectQmp(path, { timeoutMs: 60_000, abandon: Promise.resolve() }), { instanceOf: QmpError });
  t.regex(gone!.message, /QEMU went away before its QMP socket/);
});

test('parseQmpLine: each kind of line, and what is wrong with bad ones', (t) => {
  t.deepEqual(parseQmpLine('{"QMP": {}}', 1), { kind: 'greeting' });
  t.deepEqual(parseQmpLine('{"return": [1]}', 2), { kind: 'return', value: [1] });
  t.deepEqual(parseQmpLine('{"error": {"class": "C", "desc": "D"}}', 3), { kind: 'error', errorClass: 'C', desc: 'D' });
  t.deepEqual(parseQmpLine('{"event": "STOP", "timestamp": {}}', 4), { kind: 'event', event: { event: 'STOP', data: {} } });
  const bad: Array<[string, RegExp]> = [
    ['[1, 2]', /^QMP line 9 is not a JSON object/],
    ['"x"', /^QMP line 9 is not a JSON object/],
    ['{"error": "boom"}', /^QMP line 9: "error" must be an object with string "class" and "desc"$/],
    ['{"event": 5}', /^QMP line 9: "event" must be a string$/],
    ['{"event": "X", "data": 3}', /^QMP line 9: the data of event X must be an object$/],
    ['{"hello": 1}', /^QMP line 9 has none of "QMP", "return", "error" or "event"/],
  ];
  for (const [line, re] of bad) {
    const e = t.throws(() => parseQmpLine(line, 9), { instanceOf: QmpError }, line);
    t.is(e!.code, 'ERR_QMP_PROTOCOL');
    t.regex(e!.message, re);
  }
});
