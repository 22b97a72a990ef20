// How fast the command line answers, with nothing changed since the last build:
//   npm run bench -- startup [--rounds N]
// Each round, in turn: `npm start -- --help` to its exit; a mistyped flag to its exit;
// `npm start -- --port P` to its "booting" line on the host (then Ctrl-C to its process
// group, and the next round waits for it to end). Medians and spread; writes
// bench/results/startup.json. The targets (issue 13): --help within 2 s, "booting" within
// 3 s of host time.
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePortPair } from '../tests/support/ports.js';
import { percentile, printTable, writeResults } from './report.js';
import { BenchUsageError } from './usage.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

interface Timed {
  ms: number;
  status: number | null;
  output: string;
}

/** Runs `npm start -- ARGS` in its own process group; resolves when `until` matches the output (then SIGINT to the group) or when it exits. */
function npmStart(args: string[], until?: RegExp): Promise<Timed> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn('npm', ['start', '--silent', '--', ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let out = '';
    let at: number | null = null;
    const onData = (d: Buffer): void => {
      out += d.toString();
      if (until && at === null && until.test(out)) {
        at = performance.now() - t0;
        process.kill(-child.pid!, 'SIGINT');
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('error', reject);
    child.once('exit', (code) => resolve({ ms: at ?? performance.now() - t0, status: code, output: out }));
  });
}

const median = (xs: number[]): number => Math.round(percentile(xs, 50));

export const usage = 'npm run bench -- startup [--rounds N (default 5)]';

export default async function startup(argv: string[]): Promise<void> {
  let rounds = 5;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--rounds' && /^\d+$/.test(argv[i + 1] ?? '')) rounds = Number(argv[++i]);
    else throw new BenchUsageError(`unknown flag ${JSON.stringify(argv[i])} (flags: --rounds N)`);
  }
  // One start first, so that the tree is built and the image cached: every round then
  // measures "nothing changed since the last build".
  await npmStart(['--port', String(await freePortPair())], /booting/);
  const help: number[] = [];
  const badFlag: number[] = [];
  const booting: number[] = [];
  for (let r = 1; r <= rounds; r++) {
    const h = await npmStart(['--help']);
    if (h.status !== 0 || !/--machine M/.test(h.output)) throw new Error(`npm start -- --help: exit ${h.status}: ${h.output.slice(-500)}`);
    help.push(h.ms);
    const b = await npmStart(['--prot', '8080']);
    if (b.status !== 2 || !/unknown flag "--prot"/.test(b.output)) throw new Error(`npm start -- --prot: exit ${b.status}: ${b.output.slice(-500)}`);
    badFlag.push(b.ms);
    const s = await npmStart(['--port', String(await freePortPair())], /booting \(/);
    if (!/booting \(/.test(s.output)) throw new Error(`npm start did not reach "booting": ${s.output.slice(-800)}`);
    booting.push(s.ms);
    console.log(`round ${r}: --help ${Math.round(h.ms)} ms, --prot ${Math.round(b.ms)} ms, booting ${Math.round(s.ms)} ms`);
  }
  const row = (what: string, xs: number[], target: number) => ({ what, 'median ms': median(xs), 'min ms': Math.round(Math.min(...xs)), 'max ms': Math.round(Math.max(...xs)), 'target ms': target, met: median(xs) <= target ? 'yes' : 'no' });
  const rows = [row('npm start -- --help, to its exit', help, 2000), row('npm start -- --prot 8080 (a mistyped flag), to its exit', badFlag, 2000), row('npm start, to its "booting" line', booting, 3000)];
  printTable(`npm start with nothing changed since the last build, ${rounds} rounds`, rows);
  const path = writeResults('startup', { rounds, helpMs: help, badFlagMs: badFlag, bootingMs: booting, summary: rows });
  console.log(`\nwrote ${path}`);
}
