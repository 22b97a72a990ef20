// The coordinator's side of the load processes: forks worker.ts and sends it requests
// (worker-protocol.ts), one promise per reply.
import { type ChildProcess, fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { WorkerMessage, WorkerReplies, WorkerReply, WorkerRequest } from './worker-protocol.js';

const WORKER = fileURLToPath(new URL('./worker.js', import.meta.url));

export class LoadWorker {
  private seq = 0;
  private readonly waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private readonly child: ChildProcess;
  private exitError: Error | null = null;

  constructor(readonly name: string) {
    this.child = fork(WORKER, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.child.on('message', (m: WorkerReply) => {
      const w = this.waiting.get(m.seq);
      if (!w) return;
      this.waiting.delete(m.seq);
      if (m.ok) w.resolve(m.result);
      else w.reject(new Error(`${this.name}: ${m.error}`));
    });
    this.child.once('exit', (code, signal) => {
      this.exitError = new Error(`${this.name} exited (${code ?? signal})`);
      for (const w of this.waiting.values()) w.reject(this.exitError);
      this.waiting.clear();
    });
  }

  get pid(): number {
    return this.child.pid!;
  }

  request<K extends WorkerRequest['op']>(request: Extract<WorkerRequest, { op: K }>): Promise<WorkerReplies[K]> {
    if (this.exitError) return Promise.reject(this.exitError);
    const seq = ++this.seq;
    return new Promise((resolve, reject) => {
      this.waiting.set(seq, { resolve: resolve as (v: unknown) => void, reject });
      this.child.send({ seq, request } satisfies WorkerMessage);
    });
  }

  async stop(): Promise<void> {
    if (this.exitError) return;
    const gone = new Promise<void>((r) => this.child.once('exit', () => r()));
    await this.request({ op: 'exit' }).catch(() => {});
    await gone;
  }
}
