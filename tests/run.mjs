#!/usr/bin/env node
// Runs the ava suite (arguments pass through) and ends with one line
// `N passed, N failed[, N skipped]` that CI reads. Exit status is ava's.
import { spawn } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

// The microvm guests' kernel is built once (about 5 minutes on 2 cores) and cached in
// .cache/kernels/: build it before ava starts, with its progress on the terminal, so no
// test file sits in the build while ava's inactivity timeout runs. A failure is printed
// and the tests that need the kernel report it themselves.
const { qemuAvailable } = await import('../dist/appliance/qemu/launch.js');
if (qemuAvailable()) {
  const { buildGuestKernel } = await import('../dist/appliance/image/kernel-build.js');
  try {
    const k = await buildGuestKernel({ progress: (line) => console.log(`[tests] ${line}`) });
    if (!k.cached) console.log(`[tests] guest kernel ${k.release} built in ${Math.round(k.buildMs / 1000)} s`);
  } catch (e) {
    console.log(`[tests] the guest kernel could not be built: ${e.message}`);
  }
}

// ava's package exports hide its CLI file from require.resolve: use the path.
const avaCli = fileURLToPath(new URL('../node_modules/ava/entrypoints/cli.mjs', import.meta.url));
const avaStarted = Date.now();
const child = spawn(process.execPath, [avaCli, '--verbose', ...process.argv.slice(2)], { stdio: ['ignore', 'pipe', 'pipe'] });

// A deadline for the whole ava run. ava's own inactivity timeout does not end every hang:
// it is suspended while a test's t.timeout() is longer, and a test file whose process is
// blocked (or never exits) can keep ava waiting for good. CI has 90 minutes in all, so
// past the deadline the runner lists what is still running, interrupts ava (which names
// the pending tests), kills every process it started (QEMU is spawned in its own process
// group, so by pid, found through /proc), and still prints the summary line.
const DEADLINE_MIN = Number(process.env.TSVIRTIO_TEST_DEADLINE_MIN ?? 65);
// ava prints a line whenever a test ends, and no test may take over 15 minutes (its
// timeout in package.json; every t.timeout() in tests/ is below it): 20 silent minutes
// mean a test file that hangs where ava's timeout does not reach it.
const SILENCE_MIN = Number(process.env.TSVIRTIO_TEST_SILENCE_MIN ?? 20);
let lastOutputAt = Date.now();
let deadlineHit = false;
let deadlineTree = [];
const killTree = () => {
  for (const p of [...deadlineTree, ...descendants(child.pid)]) {
    try { process.kill(p.pid, 'SIGKILL'); } catch { /* gone already */ }
  }
};
const stopAva = (why) => {
  if (deadlineHit) return;
  deadlineHit = why;
  deadlineTree = descendants(child.pid);
  console.log(`[tests] ${why}: interrupting ava; its processes:`);
  for (const p of deadlineTree) console.log(`[tests]   pid ${p.pid}, ${p.ageS} s old: ${p.cmd.slice(0, 300)}`);
  child.kill('SIGINT');
  setTimeout(() => {
    killTree();
    try { child.kill('SIGKILL'); } catch { /* gone already */ }
  }, 30_000).unref();
};
const deadline = setTimeout(() => stopAva(`ava still running after ${DEADLINE_MIN} min (TSVIRTIO_TEST_DEADLINE_MIN)`), DEADLINE_MIN * 60_000);
deadline.unref();
const silence = setInterval(() => {
  const min = (Date.now() - lastOutputAt) / 60_000;
  if (min >= SILENCE_MIN) stopAva(`no output from ava for ${min.toFixed(1)} min (TSVIRTIO_TEST_SILENCE_MIN)`);
}, 30_000);
silence.unref();

/** Every live descendant of `root` (pid, age, command line), from /proc. */
function descendants(root) {
  const byParent = new Map();
  const ticks = 100; // USER_HZ on Linux
  let uptime = 0;
  try { uptime = Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0]); } catch { /* no /proc */ }
  for (const name of (() => { try { return readdirSync('/proc'); } catch { return []; } })()) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const ppid = Number(fields[1]);
      const ageS = Math.round(uptime - Number(fields[19]) / ticks);
      const cmd = readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0').join(' ').trim();
      if (!byParent.has(ppid)) byParent.set(ppid, []);
      byParent.get(ppid).push({ pid: Number(name), ageS, cmd });
    } catch { /* exited meanwhile */ }
  }
  const out = [];
  const walk = (pid) => { for (const c of byParent.get(pid) ?? []) { out.push(c); walk(c.pid); } };
  if (root !== undefined) walk(root);
  return out;
}

let passed = 0;
let failed = 0;
let skipped = 0;
let summaryFailed = 0;
let summaryPassed = -1;
let extraFailures = 0;

function scan(chunk, out) {
  out.write(chunk);
  lastOutputAt = Date.now();
  for (const line of chunk.toString().split('\n')) {
    const l = line.trim();
    if (/^✔/.test(l)) passed++;
    else if (/^✘/.test(l)) failed++;
    else if (/^- /.test(l) && /\[skip\]|skipped/i.test(l)) skipped++;
    let m;
    if ((m = /^(\d+) tests? passed/.exec(l))) summaryPassed = Number(m[1]);
    if ((m = /^(\d+) tests? failed/.exec(l))) summaryFailed = Number(m[1]);
    if ((m = /^(\d+) (uncaught exceptions?|unhandled rejections?)/.exec(l))) extraFailures += Number(m[1]);
    if (/Timed out while running tests/.test(l)) extraFailures++;
    if ((m = /^(\d+) tests? skipped/.exec(l))) skipped = Number(m[1]);
  }
}

child.stdout.on('data', (c) => scan(c, process.stdout));
child.stderr.on('data', (c) => scan(c, process.stderr));
child.on('close', (code) => {
  clearTimeout(deadline);
  clearInterval(silence);
  if (deadlineHit) {
    killTree(); // what the interrupted test files left (their clean-up hooks did not run)
    console.log(`[tests] stopped (${deadlineHit}): counted as a failure`);
    extraFailures++;
  }
  console.log(`[tests] ava ran ${Math.round((Date.now() - avaStarted) / 1000)} s`);
  if (summaryPassed >= 0) passed = summaryPassed;
  failed = Math.max(failed, summaryFailed) + extraFailures;
  if (code !== 0 && failed === 0) failed = 1; // ava failed without naming a test
  console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
  process.exit(code ?? 1);
});
