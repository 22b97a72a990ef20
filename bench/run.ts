// `npm run bench -- <name> [args]`: runs bench/<name>.ts (its default export, an async
// function taking the remaining arguments). With no name, lists what exists.
import { readdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const available = readdirSync(here)
  .filter((f) => f.endsWith('.js') && !['run.js', 'report.js'].includes(f))
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
const mod = (await import(`./${name}.js`)) as { default: (args: string[]) => Promise<void> };
await mod.default(rest);
