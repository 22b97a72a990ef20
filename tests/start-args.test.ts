// The command line of `npm start` (appliance/cli/start-args.ts): defaults, the machine
// and driver choices, the ring layout, and bad flags refused with a message naming the flag.
import test from 'ava';
import { resolve } from 'node:path';
import { UsageError } from '../appliance/cli/flags.js';
import { USAGE, parseMainArgs } from '../appliance/cli/start-args.js';

const usageError = (argv: string[]): string => {
  try {
    parseMainArgs(argv);
  } catch (e) {
    if (e instanceof UsageError) return e.message;
    throw e;
  }
  return '(no error)';
};

test('defaults: port 8080, microvm, our drivers on split rings', (t) => {
  const a = parseMainArgs([]);
  t.is(a.port, 8080);
  t.is(a.machine, 'microvm');
  t.is(a.drivers, 'ours');
  t.is(a.ring, 'split');
  t.is(a.memoryMiB, null);
  t.is(a.site, null);
});

test('--ring packed and --ring split; the usage explains the flag', (t) => {
  t.is(parseMainArgs(['--ring', 'packed']).ring, 'packed');
  t.is(parseMainArgs(['--ring=split', '--machine', 'q35']).ring, 'split');
  t.regex(USAGE, /--ring R +the vsock rings: split \(default\) or packed/);
});

test('--drivers kernel moves to q35; with --ring it is refused (the ring belongs to our drivers)', (t) => {
  t.is(parseMainArgs(['--drivers', 'kernel']).machine, 'q35');
  t.regex(usageError(['--drivers', 'kernel', '--ring', 'packed']), /--ring .*not with --drivers kernel/);
  t.regex(usageError(['--drivers', 'kernel', '--machine', 'microvm']), /--drivers kernel runs on --machine q35 only/);
});

test('--icu en (default) or full; the usage explains the flag', (t) => {
  t.is(parseMainArgs([]).icu, 'en');
  t.is(parseMainArgs(['--icu', 'full']).icu, 'full');
  t.is(parseMainArgs(['--icu=en']).icu, 'en');
  t.regex(USAGE, /--icu D +node's ICU data on microvm: en \(default/);
  t.is(usageError(['--icu', 'de']), '--icu: expected en (English only, the default) or full (every locale and converter), got "de"');
  t.is(usageError(['--icu']), '--icu: needs a value');
});

test('bad values name the flag and what was given', (t) => {
  t.is(usageError(['--ring', 'ring']), '--ring: expected split or packed, got "ring"');
  t.is(usageError(['--port', '70000']), '--port: expected a TCP port 1..65534, got "70000"');
  t.is(usageError(['--drivers', 'theirs']), '--drivers: expected ours or kernel, got "theirs"');
  t.regex(usageError(['--prot', '8080']), /unknown flag "--prot"/);
  t.is(parseMainArgs(['--site', 'x']).site, resolve('x'));
});
