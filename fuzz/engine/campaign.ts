// One target's campaign, in a process of its own (fuzz/run.ts starts it): runs the
// executor in a worker thread, saves what it finds, and watches it. A run that makes no
// progress for the target's hang time is a hang: its input (in the shared heartbeat
// buffer) is saved, the worker terminated and a fresh one started for the time left.
// Ends with one line `FUZZ-RESULT {json}` on stdout.
import { Worker } from 'node:worker_threads';
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fuzzPaths, saveInput } from './corpus-files.js';
import { HEARTBEAT_INPUT_OFFSET, type ExecutorData, type ExecutorMessage, type FailureKind } from './messages.js';
import type { CoverageSummary } from './coverage.js';

export interface CampaignResult {
  target: string;
  seconds: number;
  execs: number;
  execsPerSecond: number;
  replayed: number;
  corpus: number;
  features: number;
  countersHit: number;
  coverage: CoverageSummary & { files: string[] };
  crashes: number;
  hangs: number;
  invariantFailures: number;
  workerRestarts: number;
  failures: Array<{ kind: FailureKind; signature: string; file: string }>;
}

export interface CampaignOptions {
  target: string;
  seconds: number;
  repoRoot: string;
  codeRoot: string;
  hangSeconds: number;
  seed: number;
  mode: 'fuzz' | 'merge';
  log: (line: string) => void;
}

const HEARTBEAT_INPUT_BYTES = 1 << 20;

export async function runCampaign(opts: CampaignOptions): Promise<CampaignResult> {
  const paths = fuzzPaths(opts.repoRoot, opts.target);
  const started = Date.now();
  const deadline = started + opts.seconds * 1000;
  const result: CampaignResult = {
    target: opts.target,
    seconds: opts.seconds,
    execs: 0,
    execsPerSecond: 0,
    replayed: 0,
    corpus: 0,
    features: 0,
    countersHit: 0,
    coverage: { statements: { covered: 0, total: 0 }, branches: { covered: 0, total: 0 }, functions: { covered: 0, total: 0 }, files: [] },
    crashes: 0,
    hangs: 0,
    invariantFailures: 0,
    workerRestarts: 0,
    failures: [],
  };
  const record = (kind: FailureKind, bytes: Uint8Array, message: string, signature: string): void => {
    if (kind === 'crash') result.crashes++;
    else if (kind === 'hang') result.hangs++;
    else result.invariantFailures++;
    if (bytes.length === 0 && kind !== 'hang') return; // a repeat of a failure already saved
    const file = saveInput(paths.findings, bytes, `${kind}-`);
    writeFileSync(`${file}.txt`, `${signature}\n\n${message}\n`);
    result.failures.push({ kind, signature, file });
    opts.log(`[${opts.target}] ${kind.toUpperCase()}: ${signature} (${file})`);
  };

  const kept: Uint8Array[] = [];
  let execsBefore = 0;
  let seed = opts.seed;
  while (Date.now() < deadline - 500) {
    const heartbeat = new SharedArrayBuffer(HEARTBEAT_INPUT_OFFSET + HEARTBEAT_INPUT_BYTES);
    const hb = new Int32Array(heartbeat, 0, 4);
    const data: ExecutorData = { target: opts.target, repoRoot: opts.repoRoot, codeRoot: opts.codeRoot, deadline, seed: seed++, heartbeat, mode: opts.mode };
    const worker = new Worker(fileURLToPath(new URL('./executor.js', import.meta.url)), { workerData: data, resourceLimits: { maxOldGenerationSizeMb: 2048 } });
    const outcome = await new Promise<'done' | 'hang' | 'died'>((resolve) => {
      let lastCount = -1;
      let lastChange = Date.now();
      let finished = false;
      const finish = (how: 'done' | 'hang' | 'died'): void => {
        if (finished) return;
        finished = true;
        clearInterval(watch);
        resolve(how);
      };
      const watch = setInterval(() => {
        const count = Atomics.load(hb, 0);
        const now = Date.now();
        if (count !== lastCount) {
          lastCount = count;
          lastChange = now;
          return;
        }
        // The replay before the first run may load modules and start servers: give it time too.
        if (now - lastChange >= opts.hangSeconds * 1000) {
          const n = hb[1]!;
          const input = new Uint8Array(heartbeat, HEARTBEAT_INPUT_OFFSET, n).slice();
          record('hang', input, `no progress for ${opts.hangSeconds} s on this input`, 'hang');
          void worker.terminate();
          finish('hang');
        }
      }, 250);
      worker.on('message', (m: ExecutorMessage) => {
        if (m.type === 'input') saveInput(paths.grown, m.bytes);
        else if (m.type === 'keep') kept.push(m.bytes);
        else if (m.type === 'failure') record(m.kind, m.bytes, m.message, m.signature);
        else if (m.type === 'progress') opts.log(`[${opts.target}] ${Math.round((Date.now() - started) / 1000)} s: ${execsBefore + m.execs} execs, corpus ${m.corpus}, features ${m.features}`);
        else if (m.type === 'done') {
          result.execs = execsBefore + m.execs;
          result.replayed += m.replayed;
          result.corpus = m.corpus;
          result.features = m.features;
          result.countersHit = m.countersHit;
          result.coverage = m.focus;
          finish('done');
        }
      });
      worker.on('error', (e) => {
        // An exception nothing caught (a stray async error in the code under test): a crash.
        const n = hb[1]!;
        record('crash', new Uint8Array(heartbeat, HEARTBEAT_INPUT_OFFSET, n).slice(), e.stack ?? String(e), `uncaught: ${String(e.message).split('\n')[0]}`);
        finish('died');
      });
      worker.on('exit', () => finish('died'));
    });
    if (outcome === 'done') break;
    execsBefore += Atomics.load(hb, 0);
    result.execs = execsBefore;
    result.workerRestarts++;
    await worker.terminate();
  }
  if (opts.mode === 'merge') replaceMergedCorpus(paths.committed, kept);
  const elapsed = (Date.now() - started) / 1000;
  result.seconds = Math.round(elapsed);
  result.execsPerSecond = Math.round(result.execs / elapsed);
  return result;
}

/** The committed corpus becomes the regression inputs plus the merged ones (files c-<hash>). */
function replaceMergedCorpus(dir: string, kept: readonly Uint8Array[]): void {
  mkdirSync(dir, { recursive: true });
  for (const name of readdirSync(dir)) if (name.startsWith('c-')) rmSync(join(dir, name));
  for (const bytes of kept) saveInput(dir, bytes, 'c-');
}

const invokedDirectly = process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1];
if (invokedDirectly) {
  const [target, seconds, repoRoot, codeRoot, hangSeconds, seed, mode] = process.argv.slice(2);
  const result = await runCampaign({
    target: target!,
    seconds: Number(seconds),
    repoRoot: repoRoot!,
    codeRoot: codeRoot!,
    hangSeconds: Number(hangSeconds),
    seed: Number(seed),
    mode: mode === 'merge' ? 'merge' : 'fuzz',
    log: (line) => process.stderr.write(`${line}\n`),
  });
  process.stdout.write(`FUZZ-RESULT ${JSON.stringify(result)}\n`);
  process.exit(0);
}
