// The fuzz loop, in a worker thread of a campaign (campaign.ts): loads the target from
// the instrumented tree, replays the corpus, then mutates corpus inputs until the
// deadline, keeping each input that reaches new coverage. Before each run the input is
// copied into the shared heartbeat buffer, so the campaign can save the input of a hang
// (a run that never returns: the campaign terminates this worker).
import { parentPort, workerData } from 'node:worker_threads';
import { pathToFileURL } from 'node:url';
import { join } from 'node:path';
import { CoverageMap } from './coverage.js';
import { fuzzPaths, readInputs } from './corpus-files.js';
import { HEARTBEAT_INPUT_OFFSET, type ExecutorData, type ExecutorMessage, type FailureKind } from './messages.js';
import { Mutator, Rng } from './mutator.js';
import { InvariantError, type FuzzTarget } from './target.js';

const data = workerData as ExecutorData;
const port = parentPort!;
const post = (m: ExecutorMessage): void => port.postMessage(m);

const heartbeat = new Int32Array(data.heartbeat, 0, 4);
const heartbeatBytes = new Uint8Array(data.heartbeat, HEARTBEAT_INPUT_OFFSET);

/** First line of the message and the first stack frame inside the repository: failures with the same one are one bug. */
function signatureOf(e: unknown): string {
  const err = e as Error;
  const first = String(err?.message ?? e).split('\n')[0]!.replace(/\d+/g, 'N');
  const frame = (err?.stack ?? '').split('\n').find((l) => /\/(kernel|drivers|appliance)\//.test(l)) ?? '';
  return `${err?.name ?? 'Error'}: ${first} @ ${frame.trim().replace(/:\d+:\d+\)?$/, '')}`;
}

async function main(): Promise<void> {
  const mod = (await import(pathToFileURL(join(data.codeRoot, 'fuzz', 'targets', 'index.js')).href)) as { findTarget(name: string): FuzzTarget };
  const target = mod.findTarget(data.target);
  const cov = new CoverageMap();
  const paths = fuzzPaths(data.repoRoot, target.name);
  const rng = new Rng(data.seed);
  const mutator = new Mutator(rng, { maxBytes: target.maxInputBytes, dictionary: target.dictionary ?? [] });
  await target.setup?.();
  cov.refresh();
  cov.collect(); // what loading the modules and setup ran counts as covered

  const corpus: Uint8Array[] = [];
  const signatures = new Map<string, number>();
  let execs = 0;

  const runOne = async (input: Uint8Array): Promise<boolean> => {
    const n = Math.min(input.length, heartbeatBytes.length);
    heartbeatBytes.set(input.subarray(0, n));
    heartbeat[1] = n;
    Atomics.add(heartbeat, 0, 1);
    execs++;
    try {
      const r = target.run(input);
      if (r instanceof Promise) await r;
    } catch (e) {
      // By name: the target's InvariantError comes from the instrumented tree, another module instance.
      const kind: FailureKind = e instanceof InvariantError || (e as Error)?.name === 'InvariantError' ? 'invariant' : 'crash';
      const signature = signatureOf(e);
      const seen = signatures.get(signature) ?? 0;
      signatures.set(signature, seen + 1);
      const err = e as Error;
      // Every failure is reported (the campaign counts them); the same one is saved a few times only.
      post({ type: 'failure', kind, bytes: seen < 3 ? input : new Uint8Array(0), message: `${err?.stack ?? String(e)}`, signature });
      cov.collect();
      return false;
    }
    return cov.collect() > 0;
  };

  // Replay: seeds, the committed corpus, then what earlier campaigns grew.
  const committed = readInputs(paths.committed);
  const grown = readInputs(paths.grown);
  cov.refresh();
  if (data.mode === 'merge') {
    // Seeds and regression inputs stay whatever they cover; of the rest, smallest first,
    // only the inputs that reach something new are kept (libFuzzer's -merge=1).
    for (const input of target.seeds()) await runOne(input);
    for (const f of committed.filter((f) => f.name.startsWith('regress-'))) await runOne(f.bytes);
    const candidates = [...committed.filter((f) => !f.name.startsWith('regress-')), ...grown].map((f) => f.bytes).sort((a, b) => a.length - b.length);
    for (const input of candidates) {
      cov.refresh();
      if (await runOne(input)) post({ type: 'keep', bytes: input });
    }
    await target.teardown?.();
    cov.refresh();
    post({ type: 'done', execs, corpus: 0, features: cov.features, countersHit: cov.countersHit(), focus: cov.summary(target.focus.map((f) => f.replace(/\.ts$/, '.js'))), replayed: execs });
    return;
  }
  const start = [...target.seeds(), ...committed.map((f) => f.bytes), ...grown.map((f) => f.bytes)];
  for (const input of start) {
    if (Date.now() >= data.deadline) break;
    const fresh = await runOne(input);
    cov.refresh();
    if (fresh || corpus.length === 0) corpus.push(input);
  }
  const replayed = execs;

  let lastProgress = Date.now();
  while (Date.now() < data.deadline) {
    // Newer inputs are picked more often: they are where the frontier is.
    const pick = rng.below(4) === 0 ? corpus.length - 1 - rng.below(Math.min(16, corpus.length)) : rng.below(corpus.length);
    const parent = corpus[pick] ?? new Uint8Array(0);
    const other = corpus[rng.below(corpus.length)] ?? null;
    const child = mutator.mutate(parent, other);
    if (await runOne(child)) {
      corpus.push(child);
      post({ type: 'input', bytes: child });
    }
    if ((execs & 255) === 0) {
      cov.refresh();
      const now = Date.now();
      if (now - lastProgress >= 5000) {
        lastProgress = now;
        post({ type: 'progress', execs, corpus: corpus.length, features: cov.features });
      }
    }
  }
  await target.teardown?.();
  cov.refresh();
  post({ type: 'done', execs, corpus: corpus.length, features: cov.features, countersHit: cov.countersHit(), focus: cov.summary(target.focus.map((f) => f.replace(/\.ts$/, '.js'))), replayed });
}

main().catch((e) => {
  post({ type: 'failure', kind: 'crash', bytes: new Uint8Array(0), message: `executor: ${(e as Error)?.stack ?? String(e)}`, signature: 'executor' });
  process.exit(1);
});
