// Bundles a user's program (a .js or .ts file and what it imports) into one ESM file for
// the guest, with esbuild: 'tsvirtio/guest' resolves to this repository's API module
// (appliance/runtime/guest.ts), Node's built-in modules stay imports, and a require()
// is provided for CommonJS dependencies that call it. Type errors are not checked
// (esbuild strips types); syntax and resolution errors fail with esbuild's messages.
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { ROOT } from '../../run/guest-image.js';

/** The module 'tsvirtio/guest' resolves to. */
export const GUEST_API_MODULE = join(ROOT, 'appliance', 'runtime', 'guest.ts');
export const GUEST_API_SPECIFIER = 'tsvirtio/guest';

export class BundleError extends Error {
  readonly code = 'ERR_TSVIRTIO_BUNDLE';
  constructor(message: string) {
    super(message);
    this.name = 'BundleError';
  }
}

/** Writes the bundle of `app` to `outFile`; throws BundleError with esbuild's messages (file:line:column). */
export async function bundleProgram(app: string, outFile: string): Promise<void> {
  const esbuild = await import('esbuild');
  mkdirSync(dirname(outFile), { recursive: true });
  try {
    await esbuild.build({
      entryPoints: [app],
      outfile: outFile,
      bundle: true,
      format: 'esm',
      platform: 'node',
      target: 'node20',
      alias: { [GUEST_API_SPECIFIER]: GUEST_API_MODULE },
      banner: { js: "import { createRequire as __tsvirtioCreateRequire } from 'node:module'; const require = __tsvirtioCreateRequire(import.meta.url);" },
      logLevel: 'silent',
    });
  } catch (e) {
    const errors = (e as { errors?: Array<{ text: string; location?: { file: string; line: number; column: number } | null }> }).errors;
    if (!errors) throw new BundleError(`cannot bundle ${app}: ${(e as Error).message}`);
    const lines = errors.map((m) => (m.location ? `${m.location.file}:${m.location.line}:${m.location.column}: ${m.text}` : m.text));
    throw new BundleError(`cannot bundle ${app}:\n${lines.join('\n')}`);
  }
}
