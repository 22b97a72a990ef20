// `npm run bench -- <name> [args]`: runs bench/<name>.ts (its default export, an async
// function taking the remaining arguments). With no name, lists what exists.
import { readdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BenchUsageError } from './usage.js';

const here = dirname(fileURLToPath(import.meta.url));
const available = readdirSync(here)
  .filter((f) => f.endsWith('.js') && !['run.js', 'report.js', 'usage.js'].includes(f))
  .map((f) => f.slice(0, -3))
  .sort();

const [name, ...rest] = process.argv.slice(2);
if (!name || name === '--help' || name === '-h') {
  console.log(`usage: npm run bench -- <name> [args]\nbenchmarks: ${available.join(', ')}`);
  process.exit(name ? 0 : 2);
}
if (!available.includes(name)) {
  console.error(`bench: no benchmark named '${name}' (have: ${available.join(', ')})`);
  process.exit(2);
}
const mod = (await import(`./${name}.js`)) as { default: (args: string[]) => Promise<void>; usage?: string };
if (rest.includes('--help') || rest.includes('-h')) {
  console.log(mod.usage !== undefined ? `usage: ${mod.usage}` : `usage: npm run bench -- ${name} (it takes no flags)`);
  process.exit(0);
}
try {
  await mod.default(rest);
} catch (e) {
  // A wrong flag: one line and status 2, nothing measured (usage.ts).
  if (!(e instanceof BenchUsageError)) throw e;
  console.error(`bench ${name}: ${e.message}`);
  process.exit(2);
}
