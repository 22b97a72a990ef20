// Debian's C virtiofsd (shipped with qemu-system-x86), started for one shared folder.
// `-o sandbox=chroot`: its default namespace sandbox does not work in containers.
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { boundToParent } from './parent-bound.js';

export const VIRTIOFSD_PATH = process.env.TSVIRTIO_VIRTIOFSD ?? '/usr/lib/qemu/virtiofsd';

export interface VirtiofsdProcess {
  /** Returned at once, so the caller can register it for clean-up before waiting. */
  child: ChildProcess;
  /** Resolves when its vhost-user socket exists; rejects (with its stderr) if it exits first. */
  ready: Promise<void>;
  /** The last 4000 characters virtiofsd wrote to stderr. */
  stderr(): string;
}

export interface VirtiofsdOptions {
  socketPath: string;
  /** The folder shared. */
  source: string;
  /** More `-o` options. */
  options?: readonly string[];
  /** In a process group of its own, so that a terminal's Ctrl-C does not end it under a running guest (default false). */
  detached?: boolean;
}

export function spawnVirtiofsd(opts: VirtiofsdOptions): VirtiofsdProcess {
  const args = [`--socket-path=${opts.socketPath}`, '-o', `source=${opts.source}`, '-o', 'sandbox=chroot'];
  for (const o of opts.options ?? []) args.push('-o', o);
  const bound = boundToParent(VIRTIOFSD_PATH, args);
  const child = spawn(bound.command, bound.args, { stdio: ['ignore', 'ignore', 'pipe'], detached: opts.detached ?? false });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  const ready = new Promise<void>((resolve, reject) => {
    const poll = setInterval(() => {
      if (existsSync(opts.socketPath)) {
        clearInterval(poll);
        resolve();
      }
    }, 20);
    child.once('error', (e) => {
      clearInterval(poll);
      reject(new Error(`cannot run ${VIRTIOFSD_PATH}: ${e.message}`));
    });
    child.once('exit', (code, signal) => {
      clearInterval(poll);
      reject(new Error(`virtiofsd exited (${code ?? signal}) before creating its socket: ${stderr.trim() || '(no output)'}`));
    });
  });
  return { child, ready, stderr: () => stderr };
}
