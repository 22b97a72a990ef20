// Children that must not outlive this process (QEMU, virtiofsd). They run in process
// groups of their own (so a terminal's Ctrl-C reaches us first and we stop them in
// order), and our 'exit' hook kills them, but a process killed by a signal (SIGTERM from
// a test runner that gave up on it, SIGKILL, the OOM killer) runs no hook, and an
// orphaned QEMU would spin under TCG for good. So they are started through util-linux's
// setpriv with PR_SET_PDEATHSIG (prctl(2)): the kernel sends them SIGKILL when the
// thread that spawned them ends. setpriv execs the program, so the pid is the program's.
import { accessSync, constants } from 'node:fs';

const SETPRIV_CANDIDATES = ['/usr/bin/setpriv', '/bin/setpriv'];
let setpriv: string | null | undefined;

function findSetpriv(): string | null {
  if (setpriv !== undefined) return setpriv;
  setpriv = null;
  for (const p of SETPRIV_CANDIDATES) {
    try {
      accessSync(p, constants.X_OK);
      setpriv = p;
      break;
    } catch {
      /* not here */
    }
  }
  return setpriv;
}

/**
 * The command and arguments that run `command args` bound to this process's life: through
 * setpriv --pdeathsig KILL when it is installed (util-linux, Essential on Debian), as they
 * are otherwise. Spawn from the main thread: the signal follows the spawning thread.
 */
export function boundToParent(command: string, args: readonly string[]): { command: string; args: string[] } {
  const sp = process.env['TSVIRTIO_NO_PDEATHSIG'] === '1' ? null : findSetpriv();
  return sp === null ? { command, args: [...args] } : { command: sp, args: ['--pdeathsig', 'KILL', '--', command, ...args] };
}
