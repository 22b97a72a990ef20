// `tsvirtio run APP ...` as a user runs it (bin/tsvirtio.mjs, dist/ as it is: no build
// under a running suite), in a process group of its own as a terminal gives a command,
// with --verbose so that it names QEMU's and virtiofsd's pids and its socket folder.
// Everything it started is killed by pid in stop(), even when a test failed.
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const TSVIRTIO = join(ROOT, 'bin', 'tsvirtio.mjs');

export interface RunningCommand {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves when `re` matches stdout (or stderr with `on: 'stderr'`); rejects if the command exits first. */
  waitFor(re: RegExp, on?: 'stdout' | 'stderr'): Promise<RegExpExecArray>;
  /** The host ports of the --forward listeners, in order ("forwarding HOST:PORT -> ..."). */
  forwardPorts(): number[];
  /** QEMU's and virtiofsd's pids and the socket folder, once the program started. */
  parts(): { qemu: number; virtiofsd: number[]; socketDir: string } | null;
  /** Kills the command's group, then QEMU and virtiofsd by pid (SIGKILL: its children, and the pids it printed), and removes the socket folder. */
  stop(): Promise<void>;
}

export const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** The pids whose parent is `pid` (from /proc): QEMU and virtiofsd of a command, whatever it printed. */
export function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      // "pid (comm) state ppid ...": comm may hold spaces, so read after the last ')'.
      const stat = readFileSync(`/proc/${name}/stat`, 'latin1');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid) out.push(Number(name));
    } catch {
      /* gone meanwhile */
    }
  }
  return out;
}

export function spawnTsvirtio(args: readonly string[]): RunningCommand {
  const child = spawn(process.execPath, [TSVIRTIO, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], detached: true, env: { ...process.env, TSVIRTIO_NO_BUILD: '1' } });
  let out = '';
  let err = '';
  const waiters = new Set<() => void>();
  const changed = (): void => {
    for (const w of [...waiters]) w();
  };
  child.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
    changed();
  });
  child.stderr!.on('data', (d: Buffer) => {
    err += d.toString();
    changed();
  });
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => child.once('exit', (code, signal) => r({ code, signal })));
  let seenParts: { qemu: number; virtiofsd: number[]; socketDir: string } | null = null;
  const parts = (): typeof seenParts => {
    if (seenParts) return seenParts;
    const m = /qemu pid (\d+), virtiofsd pids ([\d ]+|none), daemon in pid \d+, sockets in (\S+)/.exec(err);
    if (m) seenParts = { qemu: Number(m[1]), virtiofsd: m[2] === 'none' ? [] : m[2]!.split(' ').map(Number), socketDir: m[3]! };
    return seenParts;
  };
  return {
    child,
    stdout: () => out,
    stderr: () => err,
    exit,
    waitFor(re, on = 'stdout') {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          parts();
          const m = re.exec(on === 'stdout' ? out : err);
          if (m) {
            waiters.delete(check);
            resolve(m);
          }
        };
        waiters.add(check);
        check();
        void exit.then((e) => {
          if (!waiters.has(check)) return;
          waiters.delete(check);
          reject(new Error(`tsvirtio ${args.join(' ')} exited (${e.code ?? e.signal}) before ${re} on ${on}:\n${err}\n--- stdout:\n${out}`));
        });
      });
    },
    forwardPorts: () => [...err.matchAll(/forwarding \S+:(\d+) -> /g)].map((m) => Number(m[1])),
    parts,
    async stop() {
      const p = parts();
      const started = new Set(p ? [p.qemu, ...p.virtiofsd] : []);
      if (child.exitCode === null && child.signalCode === null) {
        for (const pid of childrenOf(child.pid!)) started.add(pid);
        try {
          process.kill(-child.pid!, 'SIGKILL');
        } catch {
          /* gone */
        }
        await exit;
      }
      for (const pid of started) if (alive(pid)) process.kill(pid, 'SIGKILL');
      if (p && existsSync(p.socketDir)) rmSync(p.socketDir, { recursive: true, force: true });
    },
  };
}
