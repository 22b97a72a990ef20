// Builds the instrumented copy of the transpiled tree the fuzz campaigns run:
// dist/{kernel,drivers,appliance} with istanbul's counters in every statement, function
// and branch (the coverage the fuzzer is guided by), dist/{fuzz,tests} copied as they are
// (the harness itself is not what we want coverage of). The copy lives in
// .cache/fuzz/instrumented/, keeps dist/'s layout (relative imports resolve inside it,
// bare ones in the repository's node_modules) and is redone per file when dist/ is newer.
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative } from 'node:path';

const INSTRUMENTED_DIRS = ['kernel', 'drivers', 'appliance'];
const COPIED_DIRS = ['fuzz', 'tests'];

interface Instrumenter {
  instrumentSync(code: string, filename: string): string;
}

function jsFiles(dir: string, out: string[] = []): string[] {
  if (!existsSync(dir)) return out;
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) jsFiles(p, out);
    else if (name.endsWith('.js')) out.push(p);
  }
  return out;
}

/** Brings `instrumentedRoot` up to date with `distRoot`; returns how many files were redone. */
export function instrumentTree(distRoot: string, instrumentedRoot: string): number {
  const require = createRequire(import.meta.url);
  let instrumenter: Instrumenter | null = null;
  let redone = 0;
  for (const d of [...INSTRUMENTED_DIRS, ...COPIED_DIRS]) {
    const instrument = INSTRUMENTED_DIRS.includes(d);
    for (const src of jsFiles(join(distRoot, d))) {
      const rel = relative(distRoot, src);
      const dst = join(instrumentedRoot, rel);
      if (existsSync(dst) && statSync(dst).mtimeMs >= statSync(src).mtimeMs) continue;
      mkdirSync(dirname(dst), { recursive: true });
      if (!instrument) {
        copyFileSync(src, dst);
      } else {
        if (instrumenter === null) {
          const lib = require('istanbul-lib-instrument') as { createInstrumenter(o: object): Instrumenter };
          instrumenter = lib.createInstrumenter({ esModules: true, compact: true, produceSourceMap: false, coverageVariable: '__coverage__', preserveComments: false });
        }
        // The source map comment points at dist/'s map, which no longer matches: drop it.
        const code = readFileSync(src, 'utf8').replace(/\n\/\/# sourceMappingURL=.*$/m, '');
        writeFileSync(dst, instrumenter.instrumentSync(code, rel));
      }
      redone++;
    }
  }
  return redone;
}
