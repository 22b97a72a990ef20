// Drives the stock-Linux guest's busybox shell over the serial console.
//
// The guest's shell is non-interactive and reads commands through a pipe with tty echo
// off (see appliance/image/linux-guest.ts), so the console carries only what commands
// print. Each command goes out as one line:
//
//   printf '%s\n' '@@TSV-S-''<id>@@'; timeout -s KILL <s> sh -c "$(echo <base64 of cmd> | base64 -d)" </dev/null 2>&1; printf '%s %s\n' '@@TSV-E-''<id>@@' "$?"
//
// and its output is what appears between the two markers. The marker text never
// appears literally in the line sent (the quotes split it), so even an echoing tty could
// not fake one. The command travels base64-encoded: newlines, quotes and control
// characters in it reach the guest's shell unchanged and the tty interprets none. Every command runs in its own `sh -c`: a syntax error ends that shell,
// not the guest's; but `cd` and variables do not carry over from one run() to the next.
// Commands run one at a time, in call order.

import { randomBytes } from 'node:crypto';
import type { QemuExit, QemuInstance } from './launch.js';

export const LINUX_GUEST_READY_MARKER = 'tsvirtio-shell-ready';

export class GuestShellError extends Error {
  readonly code: string;
  /** Output seen before the error (for a timeout: what the command printed so far). */
  readonly output: string;
  constructor(code: string, message: string, output = '') {
    super(message);
    this.name = 'GuestShellError';
    this.code = code;
    this.output = output;
  }
}

export interface RunOptions {
  /**
   * How long the command may run (default 60000 ms). The guest kills it (SIGKILL, via
   * busybox `timeout`) after this time, and run() rejects if no answer comes within a
   * further 15 s.
   */
  timeoutMs?: number;
}

export interface RunResult {
  /** Everything the command wrote to stdout and stderr, lines joined with "\n", no trailing newline. */
  output: string;
  /** Its exit status (137 when the guest-side timeout killed it). */
  status: number;
}

export interface BackgroundJob {
  /** The guest pid of the background shell. */
  pid: number;
  /** The guest file that receives its stdout and stderr. */
  logFile: string;
}

/** The line discipline's canonical-mode buffer holds 4095 characters per line. */
const MAX_LINE = 4000;
const HOST_GRACE_MS = 15000;

/** Quotes a string for sh: 'it'\''s'. */
export function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** `"$(echo <base64> | base64 -d)"`: the command as one safe shell word. */
function encoded(cmd: string): string {
  if (cmd.includes('\0')) throw new GuestShellError('ERR_SHELL_INPUT', 'command contains a NUL byte');
  return `"$(echo ${Buffer.from(cmd, 'utf8').toString('base64')} | base64 -d)"`;
}

export class GuestShell {
  private queue: Promise<unknown> = Promise.resolve();
  private readonly session = randomBytes(3).toString('hex');
  private seq = 0;

  constructor(readonly qemu: QemuInstance) {}

  /** Waits for the guest's ready line, then returns a shell on it. */
  static async attach(qemu: QemuInstance, opts: { readyTimeoutMs?: number; readyMarker?: string } = {}): Promise<GuestShell> {
    await qemu.waitForLine(opts.readyMarker ?? LINUX_GUEST_READY_MARKER, opts.readyTimeoutMs ?? 120000);
    return new GuestShell(qemu);
  }

  /** Runs a command in the guest and returns its output and exit status. */
  async run(cmd: string, opts: RunOptions = {}): Promise<RunResult> {
    const timeoutMs = opts.timeoutMs ?? 60000;
    const secs = Math.max(1, Math.ceil(timeoutMs / 1000));
    const body = `timeout -s KILL ${secs} sh -c ${encoded(cmd)} </dev/null 2>&1;`;
    return this.enqueue(() => this.exchange(body, '"$?"', timeoutMs + HOST_GRACE_MS, cmd));
  }

  /**
   * Starts a command in the background (stdout and stderr to a log file in the guest)
   * and returns at once with its pid. Stop it with run(`kill <pid>`).
   */
  async runBackground(cmd: string, opts: { logFile?: string } = {}): Promise<BackgroundJob> {
    const logFile = opts.logFile ?? `/tmp/bg-${this.session}-${this.seq + 1}.log`;
    const body = `sh -c ${encoded(cmd)} </dev/null >${shellQuote(logFile)} 2>&1 &`;
    return this.enqueue(async () => {
      const r = await this.exchange(body, '"$!"', 30000, cmd);
      return { pid: r.status, logFile };
    });
  }

  /** Powers the guest off (`poweroff -f`) and resolves when QEMU has exited; kills QEMU if it does not within timeoutMs. */
  async poweroff(timeoutMs = 30000): Promise<QemuExit> {
    await this.queue.catch(() => undefined);
    if (!this.qemu.running) return this.qemu.exited;
    this.qemu.write('poweroff -f\n');
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((r) => {
      timer = setTimeout(() => r('timeout'), timeoutMs);
    });
    const first = await Promise.race([this.qemu.exited, timedOut]);
    clearTimeout(timer);
    if (first === 'timeout') return this.qemu.stop();
    return first;
  }

  private enqueue<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.queue.then(fn, fn);
    this.queue = p.catch(() => undefined);
    return p;
  }

  private exchange(body: string, statusExpr: string, hostTimeoutMs: number, cmd: string): Promise<RunResult> {
    if (!this.qemu.running) return Promise.reject(new GuestShellError('ERR_SHELL_GONE', `the guest is not running (QEMU pid ${this.qemu.pid} exited)`));
    const id = `${this.session}-${++this.seq}`;
    const start = `@@TSV-S-${id}@@`;
    const end = `@@TSV-E-${id}@@`;
    const line = `printf '%s\\n' '@@TSV-S-''${id}@@'; ${body} printf '%s %s\\n' '@@TSV-E-''${id}@@' ${statusExpr}`;
    if (line.length > MAX_LINE) {
      return Promise.reject(
        new GuestShellError('ERR_SHELL_INPUT', `command too long for the serial console (${Buffer.byteLength(cmd)} bytes; about ${Math.floor(((MAX_LINE - 200) * 3) / 4)} fit)`),
      );
    }
    return new Promise<RunResult>((resolve, reject) => {
      let started = false;
      const out: string[] = [];
      const finish = (err: GuestShellError | undefined, result?: RunResult): void => {
        clearTimeout(timer);
        off();
        if (err) reject(err);
        else resolve(result!);
      };
      const off = this.qemu.onLine((l) => {
        if (!started) {
          if (l.includes(start)) started = true;
          return;
        }
        const at = l.indexOf(end);
        if (at < 0) {
          out.push(l);
          return;
        }
        if (at > 0) out.push(l.slice(0, at));
        const status = Number.parseInt(l.slice(at + end.length).trim(), 10);
        if (Number.isNaN(status)) {
          finish(new GuestShellError('ERR_SHELL_PROTOCOL', `unreadable status line from the guest: ${JSON.stringify(l)}`, out.join('\n')));
          return;
        }
        finish(undefined, { output: out.join('\n'), status });
      });
      const timer = setTimeout(() => {
        finish(new GuestShellError('ERR_SHELL_TIMEOUT', `guest command did not finish within ${hostTimeoutMs} ms: ${cmd}`, out.join('\n')));
      }, hostTimeoutMs);
      void this.qemu.exited.then((e) => {
        finish(new GuestShellError('ERR_SHELL_GONE', `QEMU exited (code ${e.qemuCode}, signal ${e.signal}) while running: ${cmd}`, out.join('\n')));
      });
      this.qemu.write(line + '\n');
    });
  }
}
