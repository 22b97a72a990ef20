// Where the guest's time goes under load: boots the appliance with the guest's
// profiling service (--profile-port), drives it with ab, and takes a V8 CPU profile of
// the guest's node over the same window.
//   npm run bench -- profile [--drivers ours|kernel] [--page /big.html] [--concurrency 1]
//                            [--seconds 10] [--warm-up 30] [--top 40] [--node-options "OPTS"]
//                            [--guest-arg=FLAG ...]
// Writes bench/results/profile-<drivers>.cpuprofile (open it in Chrome DevTools or
// speedscope) and prints the functions with the most self time, and the split between
// JavaScript, garbage collection, native code ("program") and idle.
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connectHybridVsock } from '../appliance/pingpong/hybrid-connect.js';
import { startAppliance } from '../appliance/run/appliance.js';
import { BenchUsageError } from './usage.js';

const PROFILE_PORT = 7000;

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

interface Args {
  drivers: 'ours' | 'kernel';
  page: string;
  concurrency: number;
  seconds: number;
  top: number;
  guestArgs: string[];
  nodeOptions: string[] | undefined;
  warmSeconds: number;
}

export const usage = 'npm run bench -- profile [--drivers ours|kernel] [--page PATH] [--concurrency N] [--seconds N] [--top N] [--warm-up SECONDS] [--node-options "OPTS"] [--guest-arg=FLAG ...]';

function parseArgs(argv: string[]): Args {
  const a: Args = { drivers: 'ours', page: '/big.html', concurrency: 1, seconds: 10, top: 40, guestArgs: [], nodeOptions: undefined, warmSeconds: 30 };
  for (let i = 0; i < argv.length; i++) {
    const f = argv[i]!;
    const next = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new BenchUsageError(`${f} needs a value`);
      return v;
    };
    if (f === '--drivers') {
      const v = next();
      if (v !== 'ours' && v !== 'kernel') throw new BenchUsageError(`--drivers: expected ours or kernel, got ${v}`);
      a.drivers = v;
    } else if (f === '--page') a.page = next();
    else if (f === '--concurrency') a.concurrency = positive(f, next());
    else if (f === '--seconds') a.seconds = positive(f, next());
    else if (f === '--top') a.top = positive(f, next());
    else if (f === '--warm-up') a.warmSeconds = positive(f, next());
    else if (f === '--node-options') a.nodeOptions = next().split(' ').filter(Boolean);
    else if (f.startsWith('--guest-arg=')) a.guestArgs.push(f.slice('--guest-arg='.length));
    else throw new BenchUsageError(`unknown flag ${f} (flags: --drivers, --page, --concurrency, --seconds, --top, --warm-up, --node-options, --guest-arg=FLAG)`);
  }
  return a;
}

function positive(flag: string, v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${flag}: expected a positive integer, got ${v}`);
  return n;
}

/** ab for a fixed time; resolves its "Requests per second". */
function abFor(url: string, concurrency: number, seconds: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('ab', ['-q', '-c', String(concurrency), '-t', String(seconds), '-n', '1000000', url], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.once('error', reject);
    child.once('exit', (code) => {
      if (code !== 0) return reject(new Error(`ab exited ${code}: ${out.slice(-500)}`));
      const m = /Requests per second:\s+([\d.]+)/.exec(out);
      const t = /Time per request:\s+([\d.]+) \[ms\] \(mean\)/.exec(out);
      resolve(`${m?.[1] ?? '?'} req/s, ${t?.[1] ?? '?'} ms per request`);
    });
  });
}

async function fetchProfile(hybridSocket: string, ms: number): Promise<CpuProfile> {
  const s = await connectHybridVsock(hybridSocket, PROFILE_PORT);
  const chunks: Buffer[] = [];
  s.on('data', (c: Buffer) => chunks.push(c));
  s.write(`${ms}\n`);
  await new Promise<void>((resolve, reject) => {
    s.once('end', () => resolve());
    s.once('error', reject);
  });
  s.destroy();
  const text = Buffer.concat(chunks).toString('utf8');
  if (text.startsWith('ERR ')) throw new Error(`guest profile service: ${text.trim()}`);
  return JSON.parse(text) as CpuProfile;
}

/** Self time per function (ms), and the special nodes (idle, GC, program). */
export function summarize(p: CpuProfile): { totalMs: number; rows: Array<{ name: string; ms: number }> } {
  const byId = new Map<number, ProfileNode>();
  for (const n of p.nodes) byId.set(n.id, n);
  const selfUs = new Map<string, number>();
  let total = 0;
  for (let i = 0; i < p.samples.length; i++) {
    const n = byId.get(p.samples[i]!);
    const dt = p.timeDeltas[i + 1] ?? 0;
    if (n === undefined) continue;
    const f = n.callFrame;
    const file = f.url.split('/').pop() ?? '';
    const key = f.url ? `${f.functionName || '(anonymous)'} ${file}:${f.lineNumber + 1}` : f.functionName;
    selfUs.set(key, (selfUs.get(key) ?? 0) + dt);
    total += dt;
  }
  const rows = [...selfUs.entries()].map(([name, us]) => ({ name, ms: us / 1000 })).sort((a, b) => b.ms - a.ms);
  return { totalMs: total / 1000, rows };
}

export default async function main(argv: string[]): Promise<void> {
  const a = parseArgs(argv);
  const app = await startAppliance({
    port: 0,
    pingPongPort: 0,
    drivers: a.drivers,
    guestArgs: [`--profile-port=${PROFILE_PORT}`, ...a.guestArgs],
    nodeOptions: a.nodeOptions,
    progress: (l) => console.log(`  [${a.drivers}] ${l}`),
  });
  try {
    const url = `http://127.0.0.1:${app.webPort}${a.page}`;
    await abFor(url, a.concurrency, a.warmSeconds); // warm-up: caches, and V8's optimizing compiler
    const windowMs = a.seconds * 1000;
    const [profile, ab] = await Promise.all([fetchProfile(app.hybridSocket, windowMs), abFor(url, a.concurrency, a.seconds)]);
    const dir = join(process.cwd(), 'bench', 'results');
    mkdirSync(dir, { recursive: true });
    const file = join(dir, `profile-${a.drivers}.cpuprofile`);
    writeFileSync(file, JSON.stringify(profile));
    const { totalMs, rows } = summarize(profile);
    console.log(`\nab -c ${a.concurrency} ${a.page} for ${a.seconds} s: ${ab}`);
    console.log(`guest profile: ${totalMs.toFixed(0)} ms sampled, written to ${file}\n`);
    for (const r of rows.slice(0, a.top)) console.log(`${r.ms.toFixed(1).padStart(9)} ms ${((100 * r.ms) / totalMs).toFixed(1).padStart(5)}%  ${r.name}`);
  } finally {
    await app.stop();
  }
}
