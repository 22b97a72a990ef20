// A minimal QMP client (the QEMU Machine Protocol: JSON objects, one per line, over a
// Unix socket; QEMU started with -qmp unix:PATH,server=on,wait=off): the greeting,
// qmp_capabilities, then one command at a time. Asynchronous events are kept apart.
import { connect, type Socket } from 'node:net';

export class QmpError extends Error {
  constructor(
    readonly command: string,
    readonly qmpClass: string,
    message: string,
  ) {
    super(`QMP ${command}: ${qmpClass}: ${message}`);
    this.name = 'QmpError';
  }
}

export class Qmp {
  /** Events QEMU sent ({"event": ...}), oldest first. */
  readonly events: Array<{ event: string; data?: unknown }> = [];
  private buffered = '';
  private waiting: Array<(m: Record<string, unknown>) => void> = [];
  private unclaimed: Array<Record<string, unknown>> = [];

  private constructor(private readonly socket: Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      this.buffered += chunk;
      for (let nl = this.buffered.indexOf('\n'); nl >= 0; nl = this.buffered.indexOf('\n')) {
        const line = this.buffered.slice(0, nl).trim();
        this.buffered = this.buffered.slice(nl + 1);
        if (line === '') continue;
        const m = JSON.parse(line) as Record<string, unknown>;
        if (typeof m['event'] === 'string') this.events.push(m as { event: string; data?: unknown });
        else {
          const w = this.waiting.shift();
          if (w) w(m);
          else this.unclaimed.push(m);
        }
      }
    });
  }

  /** Connects, reads the greeting and leaves capabilities negotiation mode. */
  static async connect(path: string): Promise<Qmp> {
    const socket = connect({ path });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const q = new Qmp(socket);
    await q.next(); // {"QMP": {...}}
    await q.execute('qmp_capabilities');
    return q;
  }

  private next(): Promise<Record<string, unknown>> {
    const m = this.unclaimed.shift();
    if (m) return Promise.resolve(m);
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  /** Runs a command; resolves with its "return" value, rejects with a QmpError. */
  async execute(command: string, args?: Record<string, unknown>): Promise<unknown> {
    const reply = this.next();
    this.socket.write(JSON.stringify(args ? { execute: command, arguments: args } : { execute: command }) + '\n');
    const m = await reply;
    const err = m['error'] as { class?: string; desc?: string } | undefined;
    if (err) throw new QmpError(command, err.class ?? '?', err.desc ?? JSON.stringify(err));
    return m['return'];
  }

  close(): void {
    this.socket.destroy();
  }
}
