// Shared helpers for the QEMU matrix of our vhost-user-vsock daemon against the stock
// Linux guest (tests/vhost-vsock-linux-*.test.ts, bench/vhost.ts): a daemon started
// in-process with a log that can be waited on, deterministic data streams, the hybrid
// Unix socket's CONNECT with retries (the guest's listener may not be up yet), and
// socket helpers that never rely on the clock for their verdicts.
import { createCipheriv, createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { GuestShell, RunResult } from '../../appliance/qemu/guest-shell.js';
import { parseArgs, type DaemonConfig } from '../../drivers/virtio-vsock/daemon/config.js';
import { startDaemon, type RunningDaemon } from '../../drivers/virtio-vsock/daemon/daemon.js';

export const GUEST_CID = 3;

export interface DaemonFixture {
  dir: string;
  /** The vhost-user socket QEMU connects to. */
  socket: string;
  /** The hybrid Unix socket (CONNECT <port>); guest->host port P is `${uds}_P`. */
  uds: string;
  daemon: RunningDaemon;
  logs: string[];
  /** Resolves with the first log line (past or future) matching `re`. */
  waitLog(re: RegExp): Promise<string>;
  /** A host listener at <uds>_port (guest -> host, CID 2 port `port`), closed by dispose(). */
  hostListen(port: number, onSocket: (s: Socket) => void): Promise<void>;
  /** Closes the host listeners and the daemon, removes the folder; returns the daemon log's last 40 lines. */
  dispose(): Promise<string>;
}

/** Starts the daemon (real kernel/vhost-user server) for CID 3 with the given forwards (guest ports; bound to 127.0.0.1, any free port). */
export async function startTestDaemon(prefix: string, forwardGuestPorts: number[] = []): Promise<DaemonFixture> {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const socket = join(dir, 'vhost.sock');
  const uds = join(dir, 'vm.vsock');
  const args = ['--vm', `guest-cid=${GUEST_CID},socket=${socket},uds-path=${uds}`];
  forwardGuestPorts.forEach((p, i) => args.push('--forward', `127.0.0.1:${i + 1}=${GUEST_CID}:${p}`));
  const { config } = parseArgs(args) as { help: false; config: DaemonConfig };
  for (const f of config.forwards) f.listenPort = 0;
  const logs: string[] = [];
  const waiters: Array<{ re: RegExp; resolve: (l: string) => void }> = [];
  const log = (m: string): void => {
    logs.push(m);
    for (const w of waiters.splice(0)) {
      if (w.re.test(m)) w.resolve(m);
      else waiters.push(w);
    }
  };
  const daemon = await startDaemon(config, { log });
  const waitLog = (re: RegExp): Promise<string> => {
    const seen = logs.find((l) => re.test(l));
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve) => waiters.push({ re, resolve }));
  };
  const servers: Server[] = [];
  const hostListen = async (port: number, onSocket: (s: Socket) => void): Promise<void> => {
    const srv = createServer({ allowHalfOpen: true }, onSocket);
    servers.push(srv);
    await new Promise<void>((r) => srv.listen(`${uds}_${port}`, r));
  };
  const dispose = async (): Promise<string> => {
    for (const s of servers) s.close();
    await daemon.close();
    rmSync(dir, { recursive: true, force: true });
    return logs.slice(-40).join('\n');
  };
  return { dir, socket, uds, daemon, logs, waitLog, hostListen, dispose };
}

/** A deterministic pseudo-random byte stream (AES-128-CTR over zeros, keyed by `seed`), in chunks. */
export function* deterministicChunks(seed: string, totalBytes: number, chunkBytes = 64 * 1024): Generator<Buffer> {
  const key = createHash('sha256').update(seed).digest().subarray(0, 16);
  const cipher = createCipheriv('aes-128-ctr', key, Buffer.alloc(16));
  const zeros = Buffer.alloc(chunkBytes);
  for (let left = totalBytes; left > 0; left -= chunkBytes) {
    yield cipher.update(left >= chunkBytes ? zeros : zeros.subarray(0, left));
  }
}

export function deterministicBytes(seed: string, n: number): Buffer {
  return Buffer.concat([...deterministicChunks(seed, n)]);
}

export function sha256Hex(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

/** SHA-256 of the stream deterministicChunks(seed, n) would give. */
export function deterministicSha256(seed: string, n: number): string {
  const h = createHash('sha256');
  for (const c of deterministicChunks(seed, n)) h.update(c);
  return h.digest('hex');
}

/** Writes the chunks with back-pressure (one at a time past the high-water mark), then end()s unless keepOpen. Resolves with the bytes written and their SHA-256. */
export async function writeChunks(s: Socket, chunks: Iterable<Buffer>, opts: { keepOpen?: boolean; onProgress?: (bytes: number) => void } = {}): Promise<{ bytes: number; sha256: string }> {
  const h = createHash('sha256');
  let bytes = 0;
  let failure: Error | null = null;
  const onError = (e: Error): void => {
    failure = e;
  };
  s.on('error', onError);
  try {
    for (const c of chunks) {
      if (failure) throw failure;
      if (s.destroyed) throw new Error('socket closed during the transfer');
      h.update(c);
      bytes += c.length;
      const more = s.write(c);
      opts.onProgress?.(bytes);
      if (!more) {
        await new Promise<void>((resolve, reject) => {
          const done = (): void => {
            s.off('drain', done);
            s.off('close', closed);
            resolve();
          };
          const closed = (): void => {
            s.off('drain', done);
            reject(failure ?? new Error('socket closed during the transfer'));
          };
          s.on('drain', done);
          s.on('close', closed);
        });
      }
    }
    if (failure) throw failure;
    if (!opts.keepOpen) await new Promise<void>((resolve, reject) => s.end(() => (failure ? reject(failure) : resolve())));
    return { bytes, sha256: h.digest('hex') };
  } finally {
    s.off('error', onError);
  }
}

export interface Collected {
  bytes: number;
  sha256: string;
  data: Buffer | null;
  /** 'end' (orderly end of stream), or the error code / 'close' (closed without an end). */
  how: string;
}

/** Reads a socket to its end (or error/close); keeps the bytes when `keep`. Never rejects. */
export function collect(s: Socket, keep = true): Promise<Collected> {
  return new Promise((resolve) => {
    const h = createHash('sha256');
    const parts: Buffer[] = [];
    let bytes = 0;
    let settled = false;
    const finish = (how: string): void => {
      if (settled) return;
      settled = true;
      resolve({ bytes, sha256: h.digest('hex'), data: keep ? Buffer.concat(parts, bytes) : null, how });
    };
    s.on('data', (c: Buffer) => {
      h.update(c);
      bytes += c.length;
      if (keep) parts.push(c);
    });
    s.on('end', () => finish('end'));
    s.on('error', (e: NodeJS.ErrnoException) => finish(e.code ?? e.message));
    s.on('close', () => finish('close'));
  });
}

export class HybridRefused extends Error {
  constructor(readonly reply: string) {
    super(`hybrid CONNECT refused: ${JSON.stringify(reply)}`);
    this.name = 'HybridRefused';
  }
}

/**
 * CONNECT <port> on the hybrid socket (allowHalfOpen). Resolves with the socket after
 * "OK <n>\n" (bytes after it are unshifted), rejects with HybridRefused on any other
 * reply or a close without one. No timer: the daemon answers or closes.
 */
export function hybridConnect(uds: string, port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ path: uds, allowHalfOpen: true });
    let reply = Buffer.alloc(0);
    const fail = (why: string): void => {
      cleanup();
      s.destroy();
      reject(new HybridRefused(why));
    };
    const onData = (c: Buffer): void => {
      reply = Buffer.concat([reply, c]);
      const nl = reply.indexOf(0x0a);
      if (nl < 0) return;
      const line = reply.toString('latin1', 0, nl);
      if (!/^OK \d+$/.test(line)) return fail(line);
      cleanup();
      const rest = reply.subarray(nl + 1);
      if (rest.length > 0) s.unshift(rest);
      resolve(s);
    };
    const onEnd = (): void => fail(reply.toString('latin1') || '(closed without a reply)');
    const onError = (e: Error): void => fail(e.message);
    const cleanup = (): void => {
      s.off('data', onData);
      s.off('end', onEnd);
      s.off('error', onError);
    };
    s.on('data', onData);
    s.on('end', onEnd);
    s.on('error', onError);
    s.write(`CONNECT ${port}\n`);
  });
}

const pause = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** hybridConnect, retried while the guest has no listener yet (up to `tries`, 250 ms apart; a poll, not a verdict). */
export async function hybridConnectRetry(uds: string, port: number, tries = 480): Promise<Socket> {
  for (let i = 0; ; i++) {
    try {
      return await hybridConnect(uds, port);
    } catch (e) {
      if (i + 1 >= tries) throw e;
      await pause(250);
    }
  }
}

/** A TCP connection to 127.0.0.1:port (allowHalfOpen), resolved once connected. */
export function tcpConnect(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, allowHalfOpen: true });
    s.once('connect', () => {
      s.off('error', reject);
      resolve(s);
    });
    s.once('error', reject);
  });
}

/**
 * Waits until the guest listens on `port`: a probe CONNECT through the hybrid socket
 * that is closed at once (use it only with `fork` listeners, which survive the probe).
 */
export async function waitGuestListening(uds: string, port: number): Promise<void> {
  const s = await hybridConnectRetry(uds, port);
  s.destroy();
}

export { pause };

// ---- Transfers with the guest's socat, shared by the Linux guest test files.

/**
 * Host -> guest: `bytes` of deterministicChunks(seed) through the hybrid socket into
 * `socat VSOCK-LISTEN:port` in the guest, which keeps a copy at /tmp/big and hashes it.
 * Resolves with what was sent, the guest's `sha256sum` line and the bytes the host got back.
 */
export async function sendToGuest(shell: GuestShell, uds: string, port: number, seed: string, bytes: number, timeoutMs: number): Promise<{ sent: { bytes: number; sha256: string }; guest: RunResult; echoedBytes: number }> {
  const inGuest = shell.run(`socat -u -b 65536 VSOCK-LISTEN:${port} - | tee /tmp/big | sha256sum`, { timeoutMs });
  const s = await hybridConnectRetry(uds, port);
  const peer = collect(s);
  const sent = await writeChunks(s, deterministicChunks(seed, bytes));
  const guest = await inGuest;
  return { sent, guest, echoedBytes: (await peer).bytes };
}

/**
 * Guest -> host: the guest sends /tmp/big (sendToGuest's copy) to CID 2 port `port` and
 * removes it; `listen` puts the host listener at <uds>_port. Resolves with what the host
 * read and the guest's output (`status=N` and its sha256sum of the file).
 */
export async function receiveFromGuest(shell: GuestShell, listen: (port: number, onSocket: (s: Socket) => void) => Promise<void>, port: number, timeoutMs: number): Promise<{ got: Collected; guest: RunResult }> {
  let got: Promise<Collected> | null = null;
  const accepted = new Promise<void>((resolve) =>
    void listen(port, (s) => {
      got = collect(s, false);
      resolve();
    }),
  );
  await pause(0);
  const guest = await shell.run(`socat -u -b 65536 - VSOCK-CONNECT:2:${port} < /tmp/big; echo status=$?; sha256sum /tmp/big; rm /tmp/big`, { timeoutMs });
  await accepted;
  return { got: await got!, guest };
}

/** Runs `fn` while the guest echoes every connection to vsock port `port` (a `fork` socat listener). */
export async function withGuestEcho<T>(shell: GuestShell, uds: string, port: number, fn: () => Promise<T>): Promise<T> {
  const job = await shell.runBackground(`socat -t 600 -b 65536 VSOCK-LISTEN:${port},reuseaddr,fork,backlog=128 EXEC:cat`);
  try {
    await waitGuestListening(uds, port);
    return await fn();
  } finally {
    await shell.run(`kill ${job.pid}; pkill -f 'VSOCK-LISTEN:${port}' ; true`);
  }
}

/** `n` connections at once through the hybrid socket to an echo on `port`, each with its own bytes; resolves with the ones that did not come back intact. */
export async function echoConnections(uds: string, port: number, n: number, seed: string): Promise<Array<{ i: number; how: string; bytes: number }>> {
  const results = await Promise.all(
    Array.from({ length: n }, async (_, i) => {
      const data = deterministicBytes(`${seed} ${i}`, 16 * 1024 + i * 97);
      const s = await hybridConnect(uds, port);
      const back = collect(s);
      await writeChunks(s, [data]);
      const r = await back;
      return { i, ok: r.how === 'end' && r.bytes === data.length && r.sha256 === sha256Hex(data), how: r.how, bytes: r.bytes };
    }),
  );
  return results.filter((r) => !r.ok).map(({ i, how, bytes }) => ({ i, how, bytes }));
}
