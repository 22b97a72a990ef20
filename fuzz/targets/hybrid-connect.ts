// The hybrid vsock socket's first line (drivers/virtio-vsock/host/hybrid-unix.ts,
// Firecracker's convention: "CONNECT <port>\n", answered "OK <host_port>\n" or
// "ERR <reason>\n"), on the real stack: the backend on a Unix socket, the vsock device
// emulator, and our guest driver in the same thread with an echo server on port 5000.
// The input is what a host client writes, cut into pieces written one by one, then the
// client half-closes.
//
// Invariants: every client gets exactly one answer line, "OK <port>" only for a first
// line that says CONNECT 5000, "ERR <reason>" otherwise; after OK, the bytes written
// after the CONNECT line (even in the same piece) come back from the echo, in order;
// counters add up (accepted = connected + refused); and a witness client doing
// CONNECT 5000 gets OK and its bytes echoed after every input.
import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InProcessTransport } from '../../kernel/transport/inprocess.js';
import { VsockDevice } from '../../drivers/virtio-vsock/device/vsock-device.js';
import { VsockDriver } from '../../drivers/virtio-vsock/driver/driver.js';
import { HybridVsockBackend } from '../../drivers/virtio-vsock/host/hybrid-unix.js';
import { ByteReader } from '../engine/byte-reader.js';
import { InvariantError, check, utf8, type FuzzTarget } from '../engine/target.js';

const ECHO_PORT = 5000;
const ANSWER_TIMEOUT_MS = 8000;

interface Stack {
  dir: string;
  udsPath: string;
  transport: InProcessTransport;
  driver: VsockDriver;
  backend: HybridVsockBackend;
}

let stack: Stack | null = null;

async function setup(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'fuzz-hybrid-'));
  const udsPath = join(dir, 'vm.vsock');
  const device = new VsockDevice({ guestCid: 3 });
  const transport = InProcessTransport.sameThread(device, { memoryBytes: 16 << 20 });
  const driver = await VsockDriver.start(transport, {});
  const server = driver.createServer((s) => {
    s.on('error', () => {});
    s.pipe(s);
  });
  await new Promise<void>((resolve) => server.listen(ECHO_PORT, resolve));
  const backend = new HybridVsockBackend({ host: device.host, udsPath, connectTimeoutMs: 3000, firstLineTimeoutMs: 3000 });
  await backend.listen();
  stack = { dir, udsPath, transport, driver, backend };
}

async function teardown(): Promise<void> {
  if (stack === null) return;
  await stack.backend.close();
  stack.driver.close();
  await stack.transport.close();
  rmSync(stack.dir, { recursive: true, force: true });
  stack = null;
}

/** Writes the pieces, half-closes, and returns everything received until the server closes. */
function converse(path: string, pieces: Uint8Array[], endAfter: boolean): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const sock = connect({ path, allowHalfOpen: true });
    const got: Buffer[] = [];
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new InvariantError(`no answer and no close within ${ANSWER_TIMEOUT_MS} ms (received ${JSON.stringify(Buffer.concat(got).toString('latin1').slice(0, 80))})`));
    }, ANSWER_TIMEOUT_MS);
    sock.on('data', (d: Buffer) => got.push(d));
    sock.on('error', () => {});
    sock.on('close', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(got));
    });
    sock.once('connect', () => {
      let i = 0;
      const next = (): void => {
        if (sock.destroyed) return;
        if (i < pieces.length) {
          sock.write(pieces[i++]!);
          setImmediate(next);
        } else if (endAfter) sock.end();
      };
      next();
    });
    // The server ends its side after an ERR line; after OK the echo ends when we end.
    sock.on('end', () => sock.end());
  });
}

function expectation(sent: Buffer): { connectLine: string | null; after: Buffer } {
  const nl = sent.indexOf(0x0a);
  if (nl < 0 || nl >= 64) return { connectLine: null, after: Buffer.alloc(0) };
  return { connectLine: sent.toString('latin1', 0, nl), after: sent.subarray(nl + 1) };
}

async function run(input: Uint8Array): Promise<void> {
  const s = stack!;
  const r = new ByteReader(input);
  const cuts = Array.from({ length: r.u8() % 6 }, () => 1 + r.u8());
  const sent = Buffer.from(r.rest());
  const pieces: Uint8Array[] = [];
  let off = 0;
  for (const c of cuts) {
    if (off >= sent.length) break;
    pieces.push(sent.subarray(off, off + c));
    off += c;
  }
  if (off < sent.length) pieces.push(sent.subarray(off));

  const got = await converse(s.udsPath, pieces, true);
  const nl = got.indexOf(0x0a);
  check(nl > 0, () => `no answer line: got ${JSON.stringify(got.toString('latin1').slice(0, 80))}`);
  const answer = got.toString('latin1', 0, nl);
  const { connectLine, after } = expectation(sent);
  if (answer.startsWith('OK ')) {
    check(/^OK \d+$/.test(answer), () => `answer ${JSON.stringify(answer)}`);
    const words = (connectLine ?? '').trim().split(/\s+/);
    check(words.length === 2 && words[0]!.toUpperCase() === 'CONNECT' && /^\d+$/.test(words[1]!) && Number(words[1]) === ECHO_PORT, () => `OK for the first line ${JSON.stringify(connectLine)}`);
    const echoed = got.subarray(nl + 1);
    check(echoed.equals(after), () => `after OK: sent ${after.length} bytes after the CONNECT line, got ${echoed.length} back (${JSON.stringify(echoed.toString('latin1').slice(0, 60))})`);
  } else {
    check(/^ERR \S/.test(answer) && got.length === nl + 1, () => `answer ${JSON.stringify(got.toString('latin1').slice(0, 120))}`);
  }
  const st = s.backend.stats;
  const refused = Object.values(st.refused).reduce((a, b) => a + b, 0);
  check(st.accepted === st.connected + refused, () => `accepted ${st.accepted}, connected ${st.connected} + refused ${refused}`);
  // The witness: the daemon still serves.
  const w = await converse(s.udsPath, [utf8('CONNECT 5000\nwitness')], true);
  if (!/^OK \d+\nwitness$/.test(w.toString('latin1'))) throw new InvariantError(`the witness client got ${JSON.stringify(w.toString('latin1'))}`);
}

const seed = (cuts: number[], text: string): Uint8Array => new Uint8Array([cuts.length, ...cuts, ...Buffer.from(text, 'latin1')]);

export const hybridConnectTarget: FuzzTarget = {
  name: 'hybrid-connect',
  description: 'the hybrid vsock Unix socket\'s CONNECT line, over the device emulator and our guest driver',
  focus: ['drivers/virtio-vsock/host/hybrid-unix.ts', 'drivers/virtio-vsock/host/splice.ts'],
  maxInputBytes: 256,
  hangSeconds: 30,
  dictionary: ['CONNECT ', 'connect ', '5000', '\n', '\r\n', ' ', '\t', '4294967295', '4294967296', '0', 'OK', 'LISTEN '].map(utf8),
  seeds() {
    return [
      seed([], 'CONNECT 5000\n'),
      seed([3, 5], 'CONNECT 5000\nearly bytes'),
      seed([], 'connect   5000  \nx'),
      seed([], 'CONNECT 5001\n'),
      seed([], 'CONNECT\n'),
      seed([], 'CONNECT 99999999999\n'),
      seed([], 'x'.repeat(70)),
      seed([1, 1, 1], 'CONNECT 5000 1\n'),
    ];
  },
  setup,
  run,
  teardown,
};
