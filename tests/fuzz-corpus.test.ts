// Replays every fuzz target's seeds and committed corpus (fuzz/corpus/TARGET: a merged
// set from past campaigns and every input that ever found a bug, named regress-*) on
// the plain build, with the targets' invariant checks: a fixed bug stays fixed.
// `npm run fuzz` runs the campaigns themselves (fuzz/README.md).
import test from 'ava';
import { fileURLToPath } from 'node:url';
import { fuzzPaths, readInputs } from '../fuzz/engine/corpus-files.js';
import { TARGETS } from '../fuzz/targets/index.js';

const repoRoot = fileURLToPath(new URL('../..', import.meta.url));

for (const target of TARGETS) {
  test.serial(`${target.name}: seeds and corpus replay without failure`, async (t) => {
    const files = readInputs(fuzzPaths(repoRoot, target.name).committed);
    const inputs = [...target.seeds().map((bytes, i) => ({ name: `seed ${i}`, bytes })), ...files];
    await target.setup?.();
    try {
      for (const { name, bytes } of inputs) {
        try {
          await target.run(bytes);
        } catch (e) {
          t.fail(`${target.name} ${name}: ${(e as Error)?.stack ?? String(e)}`);
          return;
        }
      }
    } finally {
      await target.teardown?.();
    }
    const regressions = files.filter((f) => f.name.startsWith('regress-')).length;
    t.log(`${inputs.length} inputs (${regressions} regression inputs)`);
    t.pass();
  });
}
