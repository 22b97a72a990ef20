// tshark (Debian's `tshark` package) for tests that decode capture files. ensureTshark()
// installs it with apt-get when it is missing and this process is root (as on CI);
// otherwise it says what to install.
import { spawnSync } from 'node:child_process';

function onPath(): boolean {
  return spawnSync('tshark', ['-v'], { stdio: 'ignore' }).status === 0;
}

/** Makes sure tshark runs; throws with the reason when it cannot be had. */
export function ensureTshark(): void {
  if (onPath()) return;
  if (process.getuid?.() !== 0) throw new Error('tshark is not installed: apt-get install tshark (Debian package), or run the tests as root to have it installed');
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const apt = (args: string[]): string => {
    const r = spawnSync('apt-get', args, { env, encoding: 'utf8', timeout: 600_000 });
    return r.status === 0 ? '' : `apt-get ${args.join(' ')} failed (${r.status}): ${(r.stderr || r.stdout).trim().split('\n').slice(-5).join('\n')}`;
  };
  let err = apt(['install', '-y', '-qq', '--no-install-recommends', 'tshark']);
  if (err !== '') err = apt(['update', '-qq']) || apt(['install', '-y', '-qq', '--no-install-recommends', 'tshark']);
  if (err !== '' || !onPath()) throw new Error(`tshark could not be installed: ${err || 'not on PATH after apt-get install tshark'}`);
}

export interface TsharkResult {
  /** One row per frame, the fields in the order asked. */
  rows: string[][];
  status: number | null;
  stderr: string;
}

/** Decodes `file` with tshark and returns the asked fields per frame (first occurrence). */
export function tsharkFields(file: string, fields: readonly string[]): TsharkResult {
  const args = ['-r', file, '-T', 'fields', '-E', 'separator=/t', '-E', 'occurrence=f'];
  for (const f of fields) args.push('-e', f);
  const r = spawnSync('tshark', args, { encoding: 'utf8', timeout: 120_000, maxBuffer: 256 << 20 });
  const rows = r.stdout
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => l.split('\t'));
  return { rows, status: r.status, stderr: r.stderr.split('\n').filter((l) => !/Running as user "root"/.test(l) && l !== '').join('\n') };
}

/** Hex of a tshark bytes field ("68:69" or "6869") as a Buffer. */
export function tsharkBytes(field: string | undefined): Buffer {
  return Buffer.from((field ?? '').replace(/:/g, ''), 'hex');
}
