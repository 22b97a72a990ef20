// Children started through boundToParent (QEMU, virtiofsd) die with the process that
// started them, even when it is killed by a signal and runs no exit hook.
import test from 'ava';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { boundToParent } from '../appliance/qemu/parent-bound.js';

const MODULE = fileURLToPath(new URL('../appliance/qemu/parent-bound.js', import.meta.url));

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // A zombie (exited, not yet reaped) counts as gone.
  try {
    return !/\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

test('a bound child is killed when its parent is killed by SIGKILL (no exit hook runs)', async (t) => {
  if (boundToParent('sleep', []).command === 'sleep') return t.pass('setpriv is not installed: nothing to check here');
  // The parent: spawns `sleep 600` bound to itself, in a process group of its own (as QEMU is), prints its pid, waits.
  const parent = spawn(
    process.execPath,
    ['--input-type=module', '-e', `const { boundToParent } = await import(${JSON.stringify(MODULE)}); const { spawn } = await import('node:child_process'); const b = boundToParent('sleep', ['600']); const c = spawn(b.command, b.args, { stdio: 'ignore', detached: true }); console.log(c.pid); setInterval(() => {}, 1000);`],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const pid = await new Promise<number>((resolve, reject) => {
    parent.stdout!.once('data', (d: Buffer) => resolve(Number(d.toString().trim())));
    parent.once('exit', (code) => reject(new Error(`parent exited (${code}) before printing the child's pid`)));
  });
  t.true(pid > 0);
  try {
    // setpriv execs sleep: the pid is sleep's once the exec is done.
    for (let i = 0; i < 100 && !/^sleep\0/.test(readCmdline(pid)); i++) await delay(20);
    t.is(readCmdline(pid), 'sleep\x00600\x00');
    parent.kill('SIGKILL');
    let gone = false;
    for (let i = 0; i < 250 && !(gone = !alive(pid)); i++) await delay(20);
    t.true(gone, `sleep (pid ${pid}) still running after its parent was killed`);
  } finally {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone, as it should be */
    }
    parent.kill('SIGKILL');
  }
});

test('without setpriv (or with TSVIRTIO_NO_PDEATHSIG=1) the command is left as it is', (t) => {
  const saved = process.env['TSVIRTIO_NO_PDEATHSIG'];
  process.env['TSVIRTIO_NO_PDEATHSIG'] = '1';
  try {
    t.deepEqual(boundToParent('/usr/bin/qemu', ['-M', 'q35']), { command: '/usr/bin/qemu', args: ['-M', 'q35'] });
  } finally {
    if (saved === undefined) delete process.env['TSVIRTIO_NO_PDEATHSIG'];
    else process.env['TSVIRTIO_NO_PDEATHSIG'] = saved;
  }
  if (existsSync('/usr/bin/setpriv')) {
    t.deepEqual(boundToParent('/usr/bin/qemu', ['-M', 'q35']), { command: '/usr/bin/setpriv', args: ['--pdeathsig', 'KILL', '--', '/usr/bin/qemu', '-M', 'q35'] });
  }
});

function readCmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    return '';
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
