// The guest's CPU-profiling service (appliance/run/profile-service.ts), on the host over
// node:net: a request line gives a V8 profile; bad request lines get "ERR <why>" and the
// service goes on.
import test from 'ava';
import { type AddressInfo, type Server, createConnection, createServer } from 'node:net';
import type { Duplex } from 'node:stream';
import { parseProfileRequest, runProfileService } from '../appliance/run/profile-service.js';

async function startService(): Promise<{ port: number; server: Server; logs: string[] }> {
  const logs: string[] = [];
  let server!: Server;
  await runProfileService(
    (port, onSocket: (s: Duplex) => void) =>
      new Promise((resolve) => {
        server = createServer({ allowHalfOpen: true }, onSocket);
        server.listen(port, '127.0.0.1', () => resolve({ close: () => void server.close() }));
      }),
    0,
    (l) => logs.push(l),
  );
  return { port: (server.address() as AddressInfo).port, server, logs };
}

function ask(port: number, line: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = createConnection({ port, host: '127.0.0.1' });
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    s.on('error', reject);
    s.write(line);
  });
}

test('parseProfileRequest accepts milliseconds and refuses the rest, saying what', (t) => {
  t.is(parseProfileRequest('250'), 250);
  t.throws(() => parseProfileRequest('abc'), { message: /expected "<milliseconds>\\n", got "abc"/ });
  t.throws(() => parseProfileRequest('0'), { message: /window 0 ms is outside/ });
  t.throws(() => parseProfileRequest('999999999'), { message: /outside 1\.\.600000/ });
});

test('a request line gives a CPU profile of this process; bad lines get ERR and the service goes on', async (t) => {
  const { port, server, logs } = await startService();
  try {
    t.regex(await ask(port, 'soon\n'), /^ERR expected "<milliseconds>\\n", got "soon"\n$/);
    t.regex(await ask(port, 'x'.repeat(64)), /^ERR request line longer than 32 bytes\n$/);
    const profile = JSON.parse(await ask(port, '100\n')) as { nodes: unknown[]; samples: number[]; timeDeltas: number[] };
    t.true(profile.nodes.length > 0);
    t.is(profile.samples.length, profile.timeDeltas.length);
    t.is(logs.length, 2);
  } finally {
    server.close();
  }
});
