// A QMP client (QEMU Machine Protocol, docs/interop/qmp-spec.rst): JSON objects, one per
// line, over QEMU's `-qmp unix:PATH,server=on,wait=off` socket. QEMU greets with {"QMP":
// ...}; the client answers qmp_capabilities; then each {"execute": ...} gets one
// {"return": ...} or {"error": {"class", "desc"}}, in order; {"event": ...} lines come
// in between. Used to save and restore VM states (appliance/run/vm-snapshot.ts):
//
//   const qmp = await connectQmp(socketPath, { timeoutMs: 10_000 });
//   await qmp.execute('stop');
//   const r = await qmp.execute('query-migrate');
//   qmp.close();
//
// Errors are QmpError with a stable code: ERR_QMP_CONNECT (no QEMU on the socket in
// time), ERR_QMP_COMMAND (QEMU refused: its class and description), ERR_QMP_PROTOCOL (a
// line that is not a QMP object: the line's number and what is wrong; the line is
// dropped, and a command waiting for an answer fails with it, since the answer may have
// been that line), ERR_QMP_CLOSED (the connection ended with commands unanswered).
import { type Socket, connect } from 'node:net';

export type QmpErrorCode = 'ERR_QMP_CONNECT' | 'ERR_QMP_COMMAND' | 'ERR_QMP_PROTOCOL' | 'ERR_QMP_CLOSED';

export class QmpError extends Error {
  constructor(
    readonly code: QmpErrorCode,
    message: string,
    /** ERR_QMP_COMMAND: QEMU's error class (GenericError, DeviceNotFound...). */
    readonly qemuClass?: string,
  ) {
    super(message);
    this.name = 'QmpError';
  }
}

export interface QmpEvent {
  event: string;
  data: Record<string, unknown>;
}

/** A parsed server line: a greeting, an answer, an error answer or an event. */
export type QmpMessage = { kind: 'greeting' } | { kind: 'return'; value: unknown } | { kind: 'error'; errorClass: string; desc: string } | { kind: 'event'; event: QmpEvent };

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Parses one line from QEMU; throws QmpError ERR_QMP_PROTOCOL saying what is wrong with it. */
export function parseQmpLine(line: string, lineNo: number): QmpMessage {
  const where = `QMP line ${lineNo}`;
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch (e) {
    throw new QmpError('ERR_QMP_PROTOCOL', `${where} is not JSON (${(e as Error).message}): ${JSON.stringify(line.slice(0, 80))}`);
  }
  if (!isObject(v)) throw new QmpError('ERR_QMP_PROTOCOL', `${where} is not a JSON object: ${JSON.stringify(line.slice(0, 80))}`);
  if ('QMP' in v) return { kind: 'greeting' };
  if ('return' in v) return { kind: 'return', value: v['return'] };
  if ('error' in v) {
    const err = v['error'];
    if (!isObject(err) || typeof err['class'] !== 'string' || typeof err['desc'] !== 'string') throw new QmpError('ERR_QMP_PROTOCOL', `${where}: "error" must be an object with string "class" and "desc"`);
    return { kind: 'error', errorClass: err['class'], desc: err['desc'] };
  }
  if ('event' in v) {
    if (typeof v['event'] !== 'string') throw new QmpError('ERR_QMP_PROTOCOL', `${where}: "event" must be a string`);
    const data = v['data'] === undefined ? {} : v['data'];
    if (!isObject(data)) throw new QmpError('ERR_QMP_PROTOCOL', `${where}: the data of event ${v['event']} must be an object`);
    return { kind: 'event', event: { event: v['event'], data } };
  }
  throw new QmpError('ERR_QMP_PROTOCOL', `${where} has none of "QMP", "return", "error" or "event": ${JSON.stringify(line.slice(0, 80))}`);
}

export interface QmpClient {
  /** Runs a command; resolves with its "return" value, rejects with a QmpError. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T>;
  /** Subscribes to events; returns an unsubscribe function. */
  onEvent(fn: (e: QmpEvent) => void): () => void;
  /** Protocol errors seen so far (lines dropped), oldest first. */
  readonly protocolErrors: readonly QmpError[];
  close(): void;
}

export interface ConnectQmpOptions {
  /** Keep trying this long for QEMU to create and listen on the socket (default 10 s). */
  timeoutMs?: number;
  /** Stop trying early when this settles (e.g. QEMU exited). */
  abandon?: Promise<unknown>;
}

/** Connects to QEMU's QMP socket (waiting for it to appear) and leaves capabilities negotiation done. */
export async function connectQmp(path: string, opts: ConnectQmpOptions = {}): Promise<QmpClient> {
  const deadline = performance.now() + (opts.timeoutMs ?? 10_000);
  let abandoned = false;
  void opts.abandon?.then(() => (abandoned = true));
  let lastError = 'not tried';
  for (;;) {
    if (abandoned) throw new QmpError('ERR_QMP_CONNECT', `QEMU went away before its QMP socket ${path} answered (${lastError})`);
    try {
      return await openQmp(path);
    } catch (e) {
      if (e instanceof QmpError && e.code !== 'ERR_QMP_CONNECT') throw e;
      lastError = (e as Error).message;
    }
    if (performance.now() > deadline) throw new QmpError('ERR_QMP_CONNECT', `no QMP server on ${path} within ${opts.timeoutMs ?? 10_000} ms (${lastError})`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

function openQmp(path: string): Promise<QmpClient> {
  return new Promise((resolveClient, reject) => {
    const socket: Socket = connect(path);
    let buffered = '';
    let lineNo = 0;
    let greeted = false;
    let closed = false;
    const waiting: Array<{ resolve: (v: unknown) => void; reject: (e: Error) => void; command: string }> = [];
    const listeners = new Set<(e: QmpEvent) => void>();
    const protocolErrors: QmpError[] = [];

    const client: QmpClient = {
      execute<T>(command: string, args?: Record<string, unknown>): Promise<T> {
        if (closed) return Promise.reject(new QmpError('ERR_QMP_CLOSED', `QMP connection ${path} is closed: cannot run ${command}`));
        return new Promise<T>((res, rej) => {
          waiting.push({ resolve: res as (v: unknown) => void, reject: rej, command });
          socket.write(`${JSON.stringify(args === undefined ? { execute: command } : { execute: command, arguments: args })}\n`);
        });
      },
      onEvent(fn) {
        listeners.add(fn);
        return () => listeners.delete(fn);
      },
      protocolErrors,
      close() {
        closed = true;
        socket.destroy();
      },
    };

    const onMessage = (m: QmpMessage): void => {
      if (m.kind === 'greeting') {
        if (greeted) return;
        greeted = true;
        client.execute('qmp_capabilities').then(() => resolveClient(client), reject);
        return;
      }
      if (m.kind === 'event') {
        for (const fn of [...listeners]) fn(m.event);
        return;
      }
      const w = waiting.shift();
      if (w === undefined) {
        protocolErrors.push(new QmpError('ERR_QMP_PROTOCOL', `QMP line ${lineNo}: an answer to no command`));
        return;
      }
      if (m.kind === 'return') w.resolve(m.value);
      else w.reject(new QmpError('ERR_QMP_COMMAND', `QEMU refused ${w.command}: ${m.desc} (${m.errorClass})`, m.errorClass));
    };

    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      buffered += chunk;
      let nl: number;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl).trim();
        buffered = buffered.slice(nl + 1);
        if (line === '') continue;
        lineNo++;
        let m: QmpMessage;
        try {
          m = parseQmpLine(line, lineNo);
        } catch (e) {
          const err = e as QmpError;
          protocolErrors.push(err);
          // The dropped line may have been the answer: the oldest command cannot be matched any more.
          waiting.shift()?.reject(err);
          if (!greeted) {
            socket.destroy();
            reject(err);
          }
          continue;
        }
        onMessage(m);
      }
    });
    socket.on('error', (e: NodeJS.ErrnoException) => {
      if (!greeted) reject(new QmpError('ERR_QMP_CONNECT', `cannot connect to QMP socket ${path}: ${e.code ?? e.message}`));
    });
    socket.on('close', () => {
      closed = true;
      for (const w of waiting.splice(0)) w.reject(new QmpError('ERR_QMP_CLOSED', `QMP connection ${path} closed before QEMU answered ${w.command}`));
      if (!greeted) reject(new QmpError('ERR_QMP_CONNECT', `QMP socket ${path} closed before QEMU's greeting`));
    });
  });
}
