// npm run fuzz -- TARGET [--seconds N]      one target's campaign
// npm run fuzz -- all --seconds N [--jobs 2] every target, `jobs` at a time
// npm run fuzz -- TARGET|all --merge        shrinks fuzz/corpus/TARGET: the regression inputs,
//                                           plus the inputs (committed and grown) that add coverage
// npm run fuzz -- list                      the targets
// Each campaign runs in a process of its own over the instrumented tree
// (.cache/fuzz/instrumented, built here from dist/), grows .cache/fuzz/corpus/TARGET and
// saves failures in .cache/fuzz/findings/TARGET. The figures (executions per second,
// coverage, failures) are merged into bench/results/fuzz.json.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { CampaignResult } from './engine/campaign.js';
import { instrumentTree } from './engine/instrument.js';
import { TARGETS } from './targets/index.js';

const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
const codeRoot = join(repoRoot, '.cache', 'fuzz', 'instrumented');
const RESULTS = join(repoRoot, 'bench', 'results', 'fuzz.json');

const USAGE = `usage: npm run fuzz -- TARGET|all|list [--seconds N] [--jobs N] [--seed N] [--merge]
targets: ${TARGETS.map((t) => t.name).join(', ')}`;

function fail(message: string): never {
  process.stderr.write(`fuzz: ${message}\n${USAGE}\n`);
  process.exit(2);
}

function parse(argv: string[]): { names: string[]; seconds: number; jobs: number; seed: number; merge: boolean } {
  let seconds = 60;
  let merge = false;
  let jobs = 0;
  let seed = Date.now() & 0x7fffffff;
  const names: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const num = (what: string): number => {
      const v = Number(argv[++i]);
      if (!Number.isInteger(v) || v < 1) fail(`${what}: expected a positive whole number, got ${JSON.stringify(argv[i])}`);
      return v;
    };
    if (a === '--seconds') seconds = num('--seconds');
    else if (a === '--jobs') jobs = num('--jobs');
    else if (a === '--seed') seed = num('--seed');
    else if (a === '--merge') merge = true;
    else if (a === '--help' || a === '-h') {
      process.stdout.write(`${USAGE}\n`);
      process.exit(0);
    } else if (a.startsWith('-')) fail(`${a}: unknown flag`);
    else names.push(a);
  }
  if (names.length === 0) fail('name a target, or all');
  if (names.includes('list')) {
    for (const t of TARGETS) process.stdout.write(`${t.name.padEnd(16)} ${t.description}\n`);
    process.exit(0);
  }
  const all = names.includes('all') ? TARGETS.map((t) => t.name) : names;
  for (const n of all) if (!TARGETS.some((t) => t.name === n)) fail(`${n}: no such target`);
  // A merge replays everything once: the time limit only guards against a stuck replay.
  return { names: all, seconds: merge ? 3600 : seconds, jobs: jobs || (all.length > 1 ? Math.min(2, cpus().length) : 1), seed, merge };
}

function runOne(name: string, seconds: number, seed: number, merge: boolean): Promise<CampaignResult> {
  const target = TARGETS.find((t) => t.name === name)!;
  const hang = target.hangSeconds ?? 10;
  const script = join(repoRoot, 'dist', 'fuzz', 'engine', 'campaign.js');
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script, name, String(seconds), repoRoot, codeRoot, String(hang), String(seed), merge ? 'merge' : 'fuzz'], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (d: string) => (out += d));
    child.on('close', (code) => {
      const line = out.split('\n').find((l) => l.startsWith('FUZZ-RESULT '));
      if (line === undefined) reject(new Error(`${name}: the campaign process ended (status ${code}) without a result`));
      else resolve(JSON.parse(line.slice('FUZZ-RESULT '.length)) as CampaignResult);
    });
  });
}

const pct = (c: { covered: number; total: number }): string => (c.total === 0 ? '-' : `${((100 * c.covered) / c.total).toFixed(1)}% (${c.covered}/${c.total})`);

async function main(): Promise<void> {
  const { names, seconds, jobs, seed, merge } = parse(process.argv.slice(2));
  const t0 = Date.now();
  const redone = instrumentTree(join(repoRoot, 'dist'), codeRoot);
  if (redone > 0) process.stderr.write(`[fuzz] instrumented ${redone} files (${Date.now() - t0} ms)\n`);
  process.stderr.write(`[fuzz] ${names.join(', ')}: ${seconds} s each, ${jobs} at a time, seed ${seed}\n`);
  const queue = [...names];
  const results: CampaignResult[] = [];
  const worker = async (): Promise<void> => {
    for (let name = queue.shift(); name !== undefined; name = queue.shift()) {
      const r = await runOne(name, seconds, seed, merge);
      results.push(r);
      process.stderr.write(`[fuzz] ${name}: ${r.execs} execs (${r.execsPerSecond}/s), ${r.crashes} crashes, ${r.hangs} hangs, ${r.invariantFailures} invariant failures, statements ${pct(r.coverage.statements)}, branches ${pct(r.coverage.branches)}\n`);
    }
  };
  await Promise.all(Array.from({ length: jobs }, () => worker()));
  if (merge) {
    for (const r of results) process.stdout.write(`${r.target}: fuzz/corpus/${r.target} merged (${r.execs} inputs replayed, ${r.crashes + r.hangs + r.invariantFailures} failures)\n`);
    process.exit(results.every((r) => r.crashes + r.hangs + r.invariantFailures === 0) ? 0 : 1);
  }

  const previous = existsSync(RESULTS) ? (JSON.parse(readFileSync(RESULTS, 'utf8')) as { targets?: Record<string, unknown> }) : {};
  const targets: Record<string, unknown> = { ...(previous.targets ?? {}) };
  for (const r of results) targets[r.target] = { ...r, date: new Date().toISOString(), jobs, node: process.version, cores: cpus().length };
  mkdirSync(join(repoRoot, 'bench', 'results'), { recursive: true });
  writeFileSync(RESULTS, JSON.stringify({ engine: 'own coverage-guided loop over istanbul counters (fuzz/README.md)', targets }, null, 2) + '\n');

  const rows = names.map((n) => results.find((r) => r.target === n)!);
  process.stdout.write(`\n| target | s | execs | execs/s | corpus | crashes | hangs | invariant failures | statements | branches |\n|---|---|---|---|---|---|---|---|---|---|\n`);
  for (const r of rows) {
    process.stdout.write(`| ${r.target} | ${r.seconds} | ${r.execs} | ${r.execsPerSecond} | ${r.corpus} | ${r.crashes} | ${r.hangs} | ${r.invariantFailures} | ${pct(r.coverage.statements)} | ${pct(r.coverage.branches)} |\n`);
  }
  const bad = rows.reduce((n, r) => n + r.crashes + r.hangs + r.invariantFailures, 0);
  process.stdout.write(`\n${bad === 0 ? 'no failures' : `${bad} failures: see .cache/fuzz/findings/`}; figures in bench/results/fuzz.json\n`);
  process.exit(bad === 0 ? 0 : 1);
}

await main();
