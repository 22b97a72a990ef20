// How kernel/native/index.ts finds the addon: from an esbuild bundle with tsvirtio.node
// next to it (the guest image's /app/), through TSVIRTIO_ADDON, and the one clear
// error when there is none.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const root = fileURLToPath(new URL('../..', import.meta.url)); // dist/tests -> repository root
const addonPath = join(root, 'build', 'Release', 'tsvirtio.node');
const indexTs = join(root, 'kernel', 'native', 'index.ts');

function run(file: string, env: Record<string, string | undefined>): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [file], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('a bundle loads tsvirtio.node from its own folder, or from TSVIRTIO_ADDON, or says it is not built', async (t) => {
  const app = mkdtempSync(join(tmpdir(), 'tsvirtio-app-'));
  try {
    const entry = join(app, 'entry.ts');
    writeFileSync(
      entry,
      `import { loadAddon, AddonNotBuiltError } from ${JSON.stringify(indexTs)};
       try {
         const a = loadAddon();
         const fd = a.eventfd(5, true);
         console.log('ok ' + a.eventfdRead(fd));
         a.close(fd);
       } catch (e) {
         console.log((e instanceof AddonNotBuiltError ? 'missing: ' : 'other: ') + (e as Error).message);
       }`,
    );
    await esbuild.build({ entryPoints: [entry], outfile: join(app, 'main.mjs'), bundle: true, format: 'esm', platform: 'node', target: 'node20', logLevel: 'error' });
    const bundle = join(app, 'main.mjs');

    // No addon anywhere above the temp dir: the clear error.
    const missing = run(bundle, { TSVIRTIO_ADDON: undefined });
    t.is(missing.stdout.trim(), 'missing: native addon not built: run `npm ci` (or `node build.mjs`)', missing.stderr);

    // An explicit path.
    const explicit = run(bundle, { TSVIRTIO_ADDON: addonPath });
    t.is(explicit.stdout.trim(), 'ok 5', explicit.stderr);

    // An explicit path that does not exist: the same clear error.
    const wrong = run(bundle, { TSVIRTIO_ADDON: join(app, 'nope.node') });
    t.regex(wrong.stdout, /^missing: native addon not built/);

    // Next to the bundle, as in the guest image's /app/.
    copyFileSync(addonPath, join(app, 'tsvirtio.node'));
    const beside = run(bundle, { TSVIRTIO_ADDON: undefined });
    t.is(beside.stdout.trim(), 'ok 5', beside.stderr);
  } finally {
    rmSync(app, { recursive: true, force: true });
  }
});
