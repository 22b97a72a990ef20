// bench/scale/cpu-split.ts: the CPU lists of `--daemon-cpus`, the split of the machine
// between the daemon and the load processes, and the pinning itself.
import test from 'ava';
import fc from 'fast-check';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { allowedCpus, formatCpuList, parseCpuList, parseDaemonCpus, pinProcess, planCpuSplit } from '../bench/scale/cpu-split.js';

test('a CPU list and its short form go round: any set of CPUs', (t) => {
  fc.assert(
    fc.property(fc.uniqueArray(fc.integer({ min: 0, max: 300 }), { minLength: 1, maxLength: 40 }), (cpus) => {
      const sorted = [...cpus].sort((a, b) => a - b);
      const text = formatCpuList(sorted);
      t.deepEqual(parseCpuList(text, 'x'), sorted);
      // Short: a gap between every two parts, so no two could have been one range.
      const parts = text.split(',').map((p) => p.split('-').map(Number));
      for (let i = 1; i < parts.length; i++) t.true(parts[i]![0]! > parts[i - 1]!.at(-1)! + 1, text);
    }),
  );
  t.deepEqual(parseCpuList('3,0-1, 1', 'x'), [0, 1, 3]);
  t.is(formatCpuList([0, 1, 2, 5, 7, 8]), '0-2,5,7-8');
});

test('a bad CPU list is refused with the part and the flag named', (t) => {
  for (const [text, message] of [
    ['', /--daemon-cpus: "" in "" is not a CPU number or range/],
    ['a', /--daemon-cpus: "a" in "a" is not a CPU number or range/],
    ['0,,1', /--daemon-cpus: "" in "0,,1" is not/],
    ['-1', /"-1" in "-1" is not/],
    ['3-1', /--daemon-cpus: range "3-1" ends before it starts/],
    ['0-5000', /CPU 5000 is beyond 4095/],
  ] as const) {
    t.throws(() => parseDaemonCpus(text), { message }, text);
  }
  t.is(parseDaemonCpus('auto'), 'auto');
  t.is(parseDaemonCpus('shared'), 'shared');
  t.deepEqual(parseDaemonCpus('1'), [1]);
});

test('auto gives the daemon the first allowed CPU and the load the rest; one CPU: no pinning', (t) => {
  t.deepEqual(planCpuSplit('auto', [0, 1]), { daemon: [0], load: [1] });
  t.deepEqual(planCpuSplit('auto', [2, 3, 5]), { daemon: [2], load: [3, 5] });
  t.is(planCpuSplit('auto', [4]), null);
  t.is(planCpuSplit('shared', [0, 1, 2, 3]), null);
  t.deepEqual(planCpuSplit([1, 3], [0, 1, 2, 3]), { daemon: [1, 3], load: [0, 2] });
});

test('an explicit list must be allowed CPUs and leave one for the load', (t) => {
  t.throws(() => planCpuSplit([7], [0, 1]), { message: /--daemon-cpus: CPU 7 is not one this process may use \(0-1\)/ });
  t.throws(() => planCpuSplit([0, 1], [0, 1]), { message: /--daemon-cpus: 0-1 leaves no CPU for the load processes \(allowed: 0-1\); use --daemon-cpus shared/ });
});

test('the allowed CPUs come from Cpus_allowed_list; a status without it is an error', (t) => {
  t.deepEqual(allowedCpus('Name:\tnode\nCpus_allowed:\tf\nCpus_allowed_list:\t0-2,4\nMems_allowed:\t1\n'), [0, 1, 2, 4]);
  t.throws(() => allowedCpus('Name:\tnode\n'), { message: /no Cpus_allowed_list/ });
  t.true(allowedCpus().length >= 1);
});

test('pinProcess moves every thread of a running process; a gone pid is an error naming it', async (t) => {
  const cpu = allowedCpus()[0]!;
  const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60_000)'], { stdio: 'ignore' });
  try {
    await new Promise<void>((r) => child.once('spawn', () => r()));
    pinProcess(child.pid!, [cpu]);
    const status = readFileSync(`/proc/${child.pid}/status`, 'latin1');
    t.is(/^Cpus_allowed_list:\s*(\S+)/m.exec(status)?.[1], String(cpu));
    const threads = readFileSync(`/proc/${child.pid}/task/${child.pid}/status`, 'latin1');
    t.is(/^Cpus_allowed_list:\s*(\S+)/m.exec(threads)?.[1], String(cpu));
  } finally {
    child.kill('SIGKILL');
  }
  t.throws(() => pinProcess(2 ** 22 + 1, [cpu]), { message: new RegExp(`taskset -c ${cpu} for pid ${2 ** 22 + 1} failed`) });
});
