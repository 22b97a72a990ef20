// The command lines of `tsvirtio run` and `tsvirtio build` (appliance/cli/run-args.ts,
// build-args.ts): help, forwards and shares parsed, the program's own arguments, and bad
// flags refused with a message naming the flag.
import test, { type ExecutionContext } from 'ava';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseBuildArgs } from '../appliance/cli/build-args.js';
import { UsageError } from '../appliance/cli/flags.js';
import { RUN_USAGE, parseForward, parseRunArgs } from '../appliance/cli/run-args.js';

let dir = '';
let app = '';

test.before(() => {
  dir = mkdtempSync(join(tmpdir(), 'run-args-'));
  app = join(dir, 'server.ts');
  writeFileSync(app, 'export default () => 0;\n');
  writeFileSync(join(dir, 'notes.txt'), 'not a program\n');
  mkdirSync(join(dir, 'site'));
  mkdirSync(join(dir, 'photos'));
});

test.after.always(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** The UsageError message of parsing `argv`. */
function usageError(t: ExecutionContext, argv: string[], parse: (argv: string[]) => unknown = parseRunArgs): string {
  return t.throws(() => parse(argv), { instanceOf: UsageError })?.message ?? '(no error)';
}

test('--help (and -h) needs no APP; the usage names every flag', (t) => {
  t.true(parseRunArgs(['--help']).help);
  t.true(parseRunArgs(['-h']).help);
  for (const flag of ['--forward [HOST:]PORT=GUEST_PORT', '--share DIR[:TAG]', '--memory MiB', '--machine M', '--tx-mode M', '--console', '--verbose', '--help', '-- ARGS']) {
    t.true(RUN_USAGE.includes(flag), flag);
  }
});

test('defaults: microvm, the machine memory, tx mode auto, no forward or share', (t) => {
  const a = parseRunArgs([app]);
  t.is(a.app, app);
  t.is(a.machine, 'microvm');
  t.is(a.memoryMiB, null);
  t.is(a.txMode, 'auto');
  t.is(a.icu, 'en');
  t.is(parseRunArgs([app, '--icu', 'full']).icu, 'full');
  t.deepEqual(a.forwards, []);
  t.deepEqual(a.shares, []);
  t.deepEqual(a.programArgs, []);
  t.false(a.console);
  t.false(a.verbose);
});

test('APP may be a folder: its main.ts (or main.js, index.ts...)', (t) => {
  t.is(parseRunArgs(['examples/json-api']).app, resolve('examples/json-api/main.ts'));
  t.is(parseRunArgs(['examples/file-server/']).app, resolve('examples/file-server/main.ts'));
});

test('--forward: host defaults to 127.0.0.1; an address, a name, [IPv6]; port 0; repeatable; both value forms', (t) => {
  const a = parseRunArgs([app, '--forward', '8080=80', '--forward=0.0.0.0:9000=5000', '--forward', 'localhost:0=7', '--forward', '[::1]:8443=443', '--forward', '0=8']);
  t.deepEqual(a.forwards, [
    { host: '127.0.0.1', port: 8080, guestPort: 80 },
    { host: '0.0.0.0', port: 9000, guestPort: 5000 },
    { host: 'localhost', port: 0, guestPort: 7 },
    { host: '::1', port: 8443, guestPort: 443 },
    { host: '127.0.0.1', port: 0, guestPort: 8 },
  ]);
  t.deepEqual(parseForward('127.0.0.1:1=4294967294'), { host: '127.0.0.1', port: 1, guestPort: 4294967294 });
});

test('--share DIR[:TAG]: default tag "share", an explicit tag, paths resolved, repeatable with distinct tags', (t) => {
  const a = parseRunArgs([app, '--share', join(dir, 'site'), `--share=${join(dir, 'photos')}:photos`]);
  t.deepEqual(a.shares, [
    { dir: join(dir, 'site'), tag: 'share' },
    { dir: join(dir, 'photos'), tag: 'photos' },
  ]);
  const rel = parseRunArgs([app, '--share', 'tests']);
  t.deepEqual(rel.shares, [{ dir: resolve('tests'), tag: 'share' }]);
});

test("flags after APP, and the program's own arguments after --", (t) => {
  const a = parseRunArgs(['--memory', '256', app, '--machine', 'q35', '--tx-mode', 'zero-copy', '--console', '--verbose', '--', '--port', '80', 'two words', '--']);
  t.is(a.memoryMiB, 256);
  t.is(a.machine, 'q35');
  t.is(a.txMode, 'zero-copy');
  t.true(a.console);
  t.true(a.verbose);
  t.deepEqual(a.programArgs, ['--port', '80', 'two words', '--']);
});

test('bad flags: a UsageError naming the flag and what is wrong', (t) => {
  const site = join(dir, 'site');
  const cases: Array<[string[], RegExp]> = [
    [[app, '--bogus'], /^unknown flag "--bogus"$/],
    [[app, '--forward'], /^--forward: needs a value$/],
    [[app, '--forward', '8080'], /^--forward: expected \[HOST:\]PORT=GUEST_PORT \(e\.g\. 127\.0\.0\.1:8080=80\), got "8080"$/],
    [[app, '--forward', '127.0.0.1:70000=80'], /^--forward: host port 70000 is out of range 0\.\.65535/],
    [[app, '--forward', '8080=0'], /^--forward: guest port 0 is out of range 1\.\.4294967294/],
    [[app, '--forward', '8080=4294967295'], /^--forward: guest port 4294967295 is out of range/],
    [[app, '--forward', '8080=80', '--forward', '127.0.0.1:8080=81'], /^--forward: 127\.0\.0\.1:8080 is forwarded twice$/],
    [[app, '--share', join(dir, 'missing')], /^--share: .*missing is not a directory$/],
    [[app, '--share', join(dir, 'notes.txt')], /^--share: .*notes\.txt is not a directory$/],
    [[app, '--share', `${site}:rw`], /^--share: .*shares are read-only .*drop ":rw"$/],
    [[app, '--share', `${site}:bad tag!`], /^--share: bad tag "bad tag!"/],
    [[app, '--share', site, '--share', join(dir, 'photos')], /^--share: the tag "share" is used twice \(name each folder: DIR:TAG\)$/],
    [[app, '--share', ''], /^--share: empty path$/],
    [[app, '--memory', '12'], /^--memory: expected MiB, at least 64, got "12"$/],
    [[app, '--memory', 'lots'], /^--memory: /],
    [[app, '--machine', 'pc'], /^--machine: expected microvm or q35, got "pc"$/],
    [[app, '--icu', 'small'], /^--icu: expected en \(English only, the default\) or full \(every locale and converter\), got "small"$/],
    [[app, '--tx-mode', 'fast'], /^--tx-mode: expected one of auto, two-copy, single-copy, zero-copy, got "fast"$/],
    [[], /^APP: which program\? \(usage: tsvirtio run APP\)$/],
    [[join(dir, 'nope.ts')], /^APP: .*nope\.ts is not a file \(usage: tsvirtio run APP\)$/],
    [[join(dir, 'notes.txt')], /^APP: expected a \.js or \.ts file/],
    [[join(dir, 'site')], /^APP: the folder .*site has none of main\.ts, main\.mts, main\.js, main\.mjs, index\.ts, index\.mts, index\.js, index\.mjs \(usage: tsvirtio run APP\)$/],
    [[app, 'extra'], /^unexpected argument "extra" \(the program's own arguments go after --\)$/],
    [[app, '--', 'say "hi"'], /^the program's arguments: "say \\"hi\\"" cannot travel on the kernel command line/],
    [[app, '--', ...Array.from({ length: 20 }, (_, i) => String(i))], /^the program's arguments: at most 19 fit the kernel command line, got 20$/],
  ];
  for (const [argv, re] of cases) t.regex(usageError(t, argv), re, argv.join(' '));
});

test('build: APP -o DIR, --tag repeatable, the same value checks; -o required', (t) => {
  const a = parseBuildArgs([app, '-o', join(dir, 'out'), '--tag', 'site', '--tag=photos', '--machine', 'q35', '--memory', '512', '--', '--verbose']);
  t.is(a.app, app);
  t.is(a.out, join(dir, 'out'));
  t.deepEqual(a.tags, ['site', 'photos']);
  t.is(a.machine, 'q35');
  t.is(a.memoryMiB, 512);
  t.deepEqual(a.programArgs, ['--verbose']);
  t.true(parseBuildArgs(['--help']).help);
  t.regex(usageError(t, [app], parseBuildArgs), /^-o DIR: where to write the image\?/);
  t.regex(usageError(t, [app, '-o'], parseBuildArgs), /^-o: needs a value$/);
  t.regex(usageError(t, [app, '-o', 'x', '--tag', 'a', '--tag', 'a'], parseBuildArgs), /^--tag: "a" is given twice$/);
  t.regex(usageError(t, [app, '-o', 'x', '--share', 'x'], parseBuildArgs), /^unknown flag "--share"$/);
});
