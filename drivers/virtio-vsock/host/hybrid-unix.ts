// The Firecracker "hybrid vsock" host end (Firecracker docs/vsock.md):
//  - host -> guest: a program connects to the Unix socket at `udsPath`, writes
//    "CONNECT <port>\n", and after "OK <host_port>\n" has a byte stream to the guest's
//    <port>. A bad first line (not CONNECT, a bad port, too long, no newline within
//    FIRST_LINE_MAX_BYTES) gets "ERR <reason>\n" and a close; a refused or timed-out
//    connection gets "ERR <code>\n". Bytes written right after the CONNECT line (even in
//    the same write) are kept and delivered after the connection opens.
//  - guest -> host: a guest connecting to CID 2, port P reaches the Unix socket
//    listening at `<udsPath>_P`; when nothing listens there, the guest gets RST at once.
//  - while no VM is attached (`attached()` false: no front end, or the guest's driver
//    has not started the device) a CONNECT gets "ERR ENOTCONN ..." at once instead of
//    waiting for the connect timeout.
//  - listen(): a stale socket file at udsPath (its daemon died) is removed first; a live
//    one, or a path that is not a socket, is refused (socket-path.ts).
import { createServer, connect as netConnect, type Server, type Socket } from 'node:net';
import type { VsockHost, VsockListenHandle } from '../device/host-api.js';
import { type HostEndStats, type HostLog, type HostRefusalReason, makeHostEndStats, refusalOf } from './host-stats.js';
import { listenOn, prepareSocketPath } from './socket-path.js';
import { spliceStreams } from './splice.js';

/** "CONNECT 4294967295\n" is 19 bytes; allow some whitespace. */
export const FIRST_LINE_MAX_BYTES = 64;
export const FIRST_LINE_TIMEOUT_MS_DEFAULT = 10_000;
/** How long a refused client may go on sending (read and dropped) before it is closed. */
export const REFUSED_LINGER_MS = 2_000;

/**
 * Sends the ERR line and ends our side, reading and dropping what the client still
 * sends until it ends (at most REFUSED_LINGER_MS): a socket closed with unread bytes
 * resets the connection, and a client still writing then lost the ERR line (found by
 * fuzz/targets/hybrid-connect.ts: "DO\r\n" written in pieces got no answer at all).
 */
function refuseClient(s: Socket, line: string): void {
  s.on('data', () => {});
  s.resume();
  s.end(line);
  const linger = setTimeout(() => s.destroy(), REFUSED_LINGER_MS);
  s.once('close', () => clearTimeout(linger));
}

export interface HybridVsockOptions {
  host: VsockHost;
  udsPath: string;
  /** Timeout of the guest connect behind a CONNECT line (default 10 s, as device.host.connect). */
  connectTimeoutMs?: number;
  /** Close a client that sends no complete first line within this time (default 10 s). */
  firstLineTimeoutMs?: number;
  /** Whether a VM is attached (default: always); when not, CONNECT is refused at once. */
  attached?: () => boolean;
  /** Names the VM in the not-attached refusal (e.g. "guest CID 3"). */
  vmName?: string;
  log?: HostLog;
}

/** Parses the hybrid handshake line (without its newline): the port, or an error reason. */
export function parseConnectLine(line: string): { port: number } | { error: string } {
  const words = line.trim().split(/\s+/);
  if (words.length === 0 || words[0]!.toUpperCase() !== 'CONNECT') return { error: 'expected CONNECT <port>' };
  if (words.length !== 2) return { error: 'expected CONNECT <port>' };
  const p = words[1]!;
  if (!/^\d{1,10}$/.test(p)) return { error: `bad port ${JSON.stringify(p.slice(0, 16))}` };
  const port = Number(p);
  if (port > 0xffffffff) return { error: `port ${p} out of range` };
  return { port };
}

export class HybridVsockBackend {
  readonly stats: HostEndStats = makeHostEndStats();
  private server: Server | null = null;
  private anyHandle: VsockListenHandle | null = null;
  private readonly sockets = new Set<Socket>();

  constructor(private readonly opts: HybridVsockOptions) {}

  /**
   * Starts listening at udsPath and accepting guest connects. A stale socket file there
   * is removed first (logged); a live socket or a non-socket is refused with a
   * SocketPathError naming the path.
   */
  async listen(): Promise<void> {
    const what = 'hybrid vsock socket (uds-path)';
    const path = this.opts.udsPath;
    if ((await prepareSocketPath(path, what)) === 'stale-removed') {
      this.opts.log?.(`hybrid vsock: removed the stale socket ${path} (nothing was listening on it)`, 'warn');
    }
    const server = createServer({ allowHalfOpen: true }, (s) => this.onClient(s));
    await listenOn(server, what, path, (done) => server.listen(path, done));
    this.server = server;
    this.anyHandle = this.opts.host.listenAny((req) => {
      const path = `${this.opts.udsPath}_${req.port}`;
      this.stats.guestConnects++;
      const c = netConnect({ path, allowHalfOpen: true });
      this.track(c);
      c.once('error', (e: NodeJS.ErrnoException) => {
        this.stats.guestConnectsRefused++;
        this.opts.log?.(`hybrid vsock: guest port ${req.peerPort} -> host port ${req.port}: ${path}: ${e.code === 'ENOENT' || e.code === 'ECONNREFUSED' ? 'nobody listens there' : e.message}: RST`, 'info');
        req.refuse();
      });
      c.once('connect', () => {
        const vs = req.accept();
        if (vs === null) {
          c.destroy();
          return;
        }
        spliceStreams(vs, c);
      });
    });
  }

  private track(s: Socket): void {
    this.sockets.add(s);
    s.once('close', () => this.sockets.delete(s));
  }

  private onClient(s: Socket): void {
    this.track(s);
    this.stats.accepted++;
    s.on('error', () => {});
    let head: Buffer = Buffer.alloc(0);
    const timer = setTimeout(() => fail('no CONNECT line in time'), this.opts.firstLineTimeoutMs ?? FIRST_LINE_TIMEOUT_MS_DEFAULT);
    let refused = false;
    const fail = (why: string, reason: HostRefusalReason = 'badRequest'): void => {
      if (refused) return;
      refused = true;
      clearTimeout(timer);
      s.off('data', onData);
      this.stats.refused[reason]++;
      this.opts.log?.(`hybrid vsock: client refused: ERR ${why}`, 'debug');
      refuseClient(s, `ERR ${why}\n`);
    };
    const onData = (chunk: Buffer): void => {
      head = head.length === 0 ? chunk : Buffer.concat([head, chunk]);
      const nl = head.indexOf(0x0a);
      if (nl < 0) {
        if (head.length >= FIRST_LINE_MAX_BYTES) fail(`no newline within ${FIRST_LINE_MAX_BYTES} bytes`);
        return;
      }
      if (nl >= FIRST_LINE_MAX_BYTES) return fail(`first line longer than ${FIRST_LINE_MAX_BYTES} bytes`);
      clearTimeout(timer);
      s.off('data', onData);
      s.pause();
      const parsed = parseConnectLine(head.subarray(0, nl).toString('latin1'));
      if ('error' in parsed) return fail(parsed.error);
      if (this.opts.attached !== undefined && !this.opts.attached()) {
        return fail(`ENOTCONN VM not attached (${this.opts.vmName ?? 'the guest'}: no front end connected, or its vsock driver has not started the device)`, 'notAttached');
      }
      const early = head.subarray(nl + 1);
      this.connectGuest(s, parsed.port, early);
    };
    s.on('data', onData);
    s.once('end', () => {
      if (s.listenerCount('data') > 0 && head.indexOf(0x0a) < 0) fail('end of stream before the CONNECT line');
    });
  }

  private connectGuest(s: Socket, port: number, early: Buffer): void {
    this.opts.host.connect(port, { timeoutMs: this.opts.connectTimeoutMs }).then(
      (vs) => {
        if (s.destroyed) {
          vs.destroy();
          return;
        }
        this.stats.connected++;
        s.write(`OK ${vs.localPort}\n`);
        if (early.length > 0) vs.write(early);
        spliceStreams(s, vs);
      },
      (e: NodeJS.ErrnoException) => {
        this.stats.refused[refusalOf(e)]++;
        this.opts.log?.(`hybrid vsock: CONNECT ${port}: ${e.code ?? 'EIO'}: ${e.message}`, 'debug');
        if (!s.destroyed) refuseClient(s, `ERR ${e.code ?? 'EIO'}\n`);
      },
    );
  }

  async close(): Promise<void> {
    this.anyHandle?.close();
    this.anyHandle = null;
    const server = this.server;
    this.server = null;
    for (const s of this.sockets) s.destroy();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}
