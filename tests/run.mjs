#!/usr/bin/env node
// Runs the ava suite (arguments pass through) and ends with one line
// `N passed, N failed[, N skipped]` that CI reads. Exit status is ava's.
import { spawn } from 'node:child_process';
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
const child = spawn(process.execPath, [avaCli, '--verbose', ...process.argv.slice(2)], { stdio: ['ignore', 'pipe', 'pipe'] });

let passed = 0;
let failed = 0;
let skipped = 0;
let summaryFailed = 0;
let summaryPassed = -1;
let extraFailures = 0;

function scan(chunk, out) {
  out.write(chunk);
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
  if (summaryPassed >= 0) passed = summaryPassed;
  failed = Math.max(failed, summaryFailed) + extraFailures;
  if (code !== 0 && failed === 0) failed = 1; // ava failed without naming a test
  console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
  process.exit(code ?? 1);
});
