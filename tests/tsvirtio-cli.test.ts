// `tsvirtio run` and `tsvirtio build` (bin/tsvirtio.mjs) answer --help and bad flags
// before anything is built: checked in the repository and in a copy of the command and
// the sources its flag parsers import, with no dist/ and no build.mjs (a build attempt
// would fail there). No guest is booted.
import test from 'ava';
import { spawn } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../', import.meta.url));
const bin = join(root, 'bin', 'tsvirtio.mjs');
let scratch = '';
let app = '';

test.before(() => {
  scratch = mkdtempSync(join(tmpdir(), 'tsvirtio-cli-'));
  app = join(scratch, 'app.ts');
  writeFileSync(app, 'export default () => 0;\n');
});

test.after.always(() => {
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

function run(binPath: string, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, [binPath, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    c.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    c.once('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

test('tsvirtio --help lists run and build', async (t) => {
  const r = await run(bin, ['--help']);
  t.is(r.code, 0);
  t.regex(r.stdout, /^ {2}run APP \[flags\] \[-- ARGS\]$/m);
  t.regex(r.stdout, /^ {2}build APP -o DIR$/m);
});

test('run --help: the usage on stdout, status 0', async (t) => {
  const r = await run(bin, ['run', '--help']);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /^usage: tsvirtio run APP /);
  for (const flag of ['--forward', '--share DIR[:TAG]', '--memory MiB', '--machine M', '--console', '--verbose']) t.true(r.stdout.includes(flag), flag);
  t.is(r.stderr, '');
});

test('run with a bad flag or value: status 2, a message naming the flag, then the usage', async (t) => {
  for (const [args, message] of [
    [['run', app, '--bogus'], 'tsvirtio run: unknown flag "--bogus"'],
    [['run', app, '--forward', 'nine'], 'tsvirtio run: --forward: expected [HOST:]PORT=GUEST_PORT'],
    [['run', app, '--share', join(scratch, 'missing')], `tsvirtio run: --share: ${join(scratch, 'missing')} is not a directory`],
    [['run', app, '--machine', 'pc'], 'tsvirtio run: --machine: expected microvm or q35'],
    [['run'], 'tsvirtio run: APP: which program?'],
  ] as const) {
    const r = await run(bin, [...args]);
    t.is(r.code, 2, args.join(' '));
    t.true(r.stderr.startsWith(message), `${args.join(' ')}: ${r.stderr}`);
    t.regex(r.stderr, /usage: tsvirtio run APP/);
    t.is(r.stdout, '');
  }
});

test('build --help and build without -o', async (t) => {
  const help = await run(bin, ['build', '--help']);
  t.is(help.code, 0);
  t.regex(help.stdout, /^usage: tsvirtio build APP -o DIR/);
  const noOut = await run(bin, ['build', app]);
  t.is(noOut.code, 2);
  t.true(noOut.stderr.startsWith('tsvirtio build: -o DIR: where to write the image?'), noOut.stderr);
});

test('without dist/ or build.mjs: run --help and a bad flag still answer (nothing is built first)', async (t) => {
  // The command and exactly the sources its flag parsers import, next to the repository's node_modules.
  const copy = join(scratch, 'repo');
  const esbuild = await import('esbuild');
  const inputs = new Set<string>();
  for (const entry of ['appliance/cli/run-args.ts', 'appliance/cli/build-args.ts']) {
    const r = await esbuild.build({ entryPoints: [join(root, entry)], bundle: true, write: false, platform: 'node', format: 'esm', metafile: true, absWorkingDir: root, logLevel: 'error' });
    for (const f of Object.keys(r.metafile.inputs)) inputs.add(f);
  }
  for (const f of [...inputs, 'bin/tsvirtio.mjs', 'package.json']) {
    mkdirSync(dirname(join(copy, f)), { recursive: true });
    cpSync(join(root, f), join(copy, f));
  }
  symlinkSync(join(root, 'node_modules'), join(copy, 'node_modules'));
  const copiedBin = join(copy, 'bin', 'tsvirtio.mjs');
  const help = await run(copiedBin, ['run', '--help']);
  t.is(help.code, 0, help.stderr);
  t.regex(help.stdout, /^usage: tsvirtio run APP /);
  const bad = await run(copiedBin, ['run', app, '--memory', '1']);
  t.is(bad.code, 2);
  t.true(bad.stderr.startsWith('tsvirtio run: --memory: expected MiB, at least 64, got "1"'), bad.stderr);
  const buildBad = await run(copiedBin, ['build', app, '-o', join(scratch, 'out'), '--tag', '?']);
  t.is(buildBad.code, 2);
  t.true(buildBad.stderr.startsWith('tsvirtio build: --tag: bad tag "?"'), buildBad.stderr);
});
