// `npm run bench -- NAME --help` prints the benchmark's flags and measures nothing; a
// wrong flag is one line naming it, with exit status 2, and nothing measured either
// (a typo used to run minutes of defaults, or end in a stack trace).
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../..', import.meta.url)); // dist/tests -> repository root
const run = join(root, 'dist', 'bench', 'run.js');
const benches = readdirSync(join(root, 'dist', 'bench'))
  .filter((f) => f.endsWith('.js') && !['run.js', 'report.js', 'usage.js'].includes(f))
  .map((f) => f.slice(0, -3));

const bench = (...args: string[]) => spawnSync(process.execPath, [run, ...args], { encoding: 'utf8', timeout: 60_000 });

test('every benchmark is found', (t) => {
  for (const b of ['appliance', 'boot', 'fs', 'guest', 'level0', 'level1', 'profile', 'scale', 'startup', 'vhost']) t.true(benches.includes(b), b);
});

for (const name of benches) {
  test(`${name} --help: its usage, status 0, nothing run`, (t) => {
    const r = bench(name, '--help');
    t.is(r.status, 0, r.stderr);
    t.regex(r.stdout, new RegExp(`^usage: npm run bench -- ${name}\\b`));
    t.is(r.stderr, '');
  });

  test(`${name} with an unknown flag: one line naming it, status 2`, (t) => {
    const r = bench(name, '--no-such-flag');
    t.is(r.status, 2, r.stdout + r.stderr);
    t.is(r.stdout, '');
    const lines = r.stderr.trimEnd().split('\n');
    t.is(lines.length, 1, r.stderr);
    t.regex(lines[0]!, new RegExp(`^bench ${name}: unknown flag "?--no-such-flag"?`));
  });
}

test('a bad value is refused with the flag named, before anything runs', (t) => {
  const r = bench('boot', '--rounds', 'many');
  t.is(r.status, 2);
  t.regex(r.stderr, /^bench boot: --rounds: expected 1\.\.100, got "many"\n$/);
});

test('scale: --daemon-rt takes a SCHED_RR priority and excludes --daemon-nice, before anything runs', (t) => {
  for (const [args, message] of [
    [['--daemon-rt', '0'], /^bench scale: --daemon-rt: a SCHED_RR priority 1\.\.99, not "0"\n$/],
    [['--daemon-rt', 'high'], /^bench scale: --daemon-rt: a SCHED_RR priority 1\.\.99, not "high"\n$/],
    [['--daemon-rt', '10', '--daemon-nice', '-5'], /^bench scale: --daemon-rt and --daemon-nice: one or the other/],
  ] as const) {
    const r = bench('scale', ...args);
    t.is(r.status, 2, args.join(' '));
    t.regex(r.stderr, message);
  }
});

test('scale: --daemon-cpus takes auto, shared or a CPU list this machine has, before anything runs', (t) => {
  for (const [args, message] of [
    [['--daemon-cpus', 'first'], /^bench scale: --daemon-cpus: "first" in "first" is not a CPU number or range \(e\.g\. 0 or 0,2-3\)\n$/],
    [['--daemon-cpus', '4095'], /^bench scale: --daemon-cpus: CPU 4095 is not one this process may use/],
    [['--daemon-cpus', readFileSync('/proc/self/status', 'latin1').match(/^Cpus_allowed_list:\s*(\S+)/m)![1]!], /^bench scale: --daemon-cpus: .* leaves no CPU for the load processes/],
  ] as const) {
    const r = bench('scale', ...args);
    t.is(r.status, 2, args.join(' '));
    t.is(r.stdout, '');
    t.regex(r.stderr, message);
  }
});
