// node's ICU data in the microvm guest (appliance/image/icu-data.ts): with the default
// English-only data Intl formats dates, numbers and currencies, collates, segments and
// reports only English locales as supported (TextDecoder: no legacy encodings); with
// `icu: 'full'` German formatting and the converters come back. One boot per image: the program prints one JSON line.
import test from 'ava';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { bootOptions } from '../appliance/image/guest.js';
import type { IcuData } from '../appliance/image/icu-data.js';
import { buildNodeGuest } from '../appliance/image/node-guest.js';
import { launchQemu, qemuAvailable } from '../appliance/qemu/launch.js';
import { Cleanup } from './support/qemu-guest.js';

const files = new Cleanup();
const dir = files.tempDir('tsv-icu-guest-');
test.after.always(() => files.run());
const main = join(dir, 'main.js');
writeFileSync(
  main,
  `const d = new Date(Date.UTC(2026, 11, 5, 13, 4, 5));
const tryIt = (f) => { try { return f(); } catch (e) { return 'error: ' + (e.code || e.message); } };
console.log('intl: ' + JSON.stringify({
  icuDir: process.env.NODE_ICU_DATA ?? null,
  enDate: d.toLocaleString('en-US', { timeZone: 'UTC' }),
  deDate: d.toLocaleString('de-DE', { timeZone: 'UTC' }),
  nyDate: new Intl.DateTimeFormat('en-US', { timeZone: 'America/New_York', dateStyle: 'full', timeStyle: 'long' }).format(d),
  number: (1234567.891).toLocaleString('en-US'),
  currency: new Intl.NumberFormat('en-US', { style: 'currency', currency: 'EUR' }).format(12.5),
  sorted: ['b', 'a', 'C', '\\u00e4'].sort((x, y) => x.localeCompare(y)),
  words: [...new Intl.Segmenter('en', { granularity: 'word' }).segment('Hello, world.')].filter((s) => s.isWordLike).length,
  relative: new Intl.RelativeTimeFormat('en').format(-1, 'day'),
  list: new Intl.ListFormat('en').format(['a', 'b', 'c']),
  region: new Intl.DisplayNames('en', { type: 'region' }).of('DE'),
  supported: Intl.DateTimeFormat.supportedLocalesOf(['de-DE', 'en-US', 'fr', 'en']),
  collators: Intl.Collator.supportedLocalesOf(['de', 'en']),
  resolved: new Intl.DateTimeFormat().resolvedOptions().locale,
  windows1251: tryIt(() => new TextDecoder('windows-1251').decode(new Uint8Array([0xc0]))),
  latin1: tryIt(() => new TextDecoder('latin1').decode(new Uint8Array([0xe9]))),
  shiftJis: tryIt(() => new TextDecoder('shift_jis').decode(new Uint8Array([0x82, 0xa0]))),
}));
`,
);

interface IntlReport {
  icuDir: string | null;
  enDate: string;
  deDate: string;
  nyDate: string;
  number: string;
  currency: string;
  sorted: string[];
  words: number;
  relative: string;
  list: string;
  region: string;
  supported: string[];
  collators: string[];
  resolved: string;
  windows1251: string;
  latin1: string;
  shiftJis: string;
}

async function boot(icu: IcuData): Promise<{ report: IntlReport; imageBytes: number; console: string }> {
  const cleanup = new Cleanup();
  try {
    const image = await buildNodeGuest({ machine: 'microvm', main, icu, name: `icu-${icu}-test` });
    const qemu = cleanup.qemu(launchQemu({ ...bootOptions(image), timeoutMs: 10 * 60 * 1000 }));
    const exit = await qemu.exited;
    const out = qemu.console();
    const line = out.split('\n').find((l) => l.startsWith('intl: '));
    if (exit.status !== 0 || line === undefined) throw new Error(`the guest ended with status ${exit.status} without the intl line:\n${out.slice(-3000)}`);
    return { report: JSON.parse(line.slice('intl: '.length)) as IntlReport, imageBytes: image.imageBytes, console: out };
  } finally {
    await cleanup.run();
  }
}

const guestTest = qemuAvailable() ? test.serial : test.skip;
if (!qemuAvailable()) console.warn('qemu-icu: skipped (needs qemu-system-x86_64)');

let enBytes = 0;

guestTest('microvm, default ICU data (en): Intl formats, collates and segments in English; only English locales are supported; no converter tables', async (t) => {
  const { report: r, imageBytes } = await boot('en');
  enBytes = imageBytes;
  t.log(`image ${(imageBytes / 1e6).toFixed(1)} MB`);
  t.is(r.icuDir, '/usr/share/icu');
  t.is(r.enDate, '12/5/2026, 1:04:05 PM');
  t.is(r.deDate, '12/5/2026, 1:04:05 PM', 'German falls back to English');
  t.is(r.nyDate, 'Saturday, December 5, 2026 at 8:04:05 AM EST', 'time zone data and names');
  t.is(r.number, '1,234,567.891');
  t.is(r.currency, '€12.50');
  t.deepEqual(r.sorted, ['a', 'ä', 'b', 'C'], 'root collation');
  t.is(r.words, 2);
  t.is(r.relative, '1 day ago');
  t.is(r.list, 'a, b, and c');
  t.is(r.region, 'Germany');
  t.deepEqual(r.supported, ['en-US', 'en']);
  t.deepEqual(r.collators, ['en']);
  t.is(r.resolved, 'en-US');
  t.is(r.windows1251, 'error: ERR_ENCODING_NOT_SUPPORTED', 'no converter tables');
  t.is(r.shiftJis, 'error: ERR_ENCODING_NOT_SUPPORTED');
  t.is(r.latin1, '\u00e9', 'latin1 needs no table');
});

guestTest('microvm, --icu full: node keeps its linked data: German formatting, every locale, every converter', async (t) => {
  const { report: r, imageBytes } = await boot('full');
  t.log(`image ${(imageBytes / 1e6).toFixed(1)} MB`);
  t.is(r.icuDir, null);
  t.is(r.enDate, '12/5/2026, 1:04:05 PM');
  t.is(r.deDate, '5.12.2026, 13:04:05');
  t.deepEqual(r.supported, ['de-DE', 'en-US', 'fr', 'en']);
  t.deepEqual(r.collators, ['de', 'en']);
  t.is(r.shiftJis, 'あ');
  t.is(r.windows1251, '\u0410');
  if (enBytes > 0) t.true(imageBytes > enBytes + 10e6, `full ${imageBytes} vs en ${enBytes} bytes`);
});
