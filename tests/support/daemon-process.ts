// The vhost-user-vsock daemon as a child process, as a user runs it (QEMU guest tests).
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const DAEMON_BIN = fileURLToPath(new URL('../../../drivers/virtio-vsock/daemon/vhost-user-vsock.mjs', import.meta.url));

/**
 * Spawns the daemon with `args`. `child` is returned at once so the caller can register
 * it for clean-up before waiting; `ready` resolves when the vhost-user socket exists and
 * the daemon said it is running, and rejects (with its stderr) if it exits first.
 */
export function spawnDaemon(args: readonly string[], vhostSocket: string): { child: ChildProcess; ready: Promise<void> } {
  const child = spawn(process.execPath, [DAEMON_BIN, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const ready = new Promise<void>((resolve, reject) => {
    const poll = setInterval(() => {
      if (existsSync(vhostSocket) && stderr.includes('running')) {
        clearInterval(poll);
        resolve();
      }
    }, 20);
    child.once('exit', (code) => {
      clearInterval(poll);
      reject(new Error(`vhost-user-vsock exited (${code}) before it was ready: ${stderr}`));
    });
  });
  return { child, ready };
}
