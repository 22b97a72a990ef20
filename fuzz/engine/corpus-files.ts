// Where inputs live on disk: the committed corpus (fuzz/corpus/TARGET: seeds, a
// minimized set from past campaigns, and every input that ever found a bug), the corpus
// a campaign grows (.cache/fuzz/corpus/TARGET) and what it finds
// (.cache/fuzz/findings/TARGET: the input, and a .txt with what went wrong).
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface FuzzPaths {
  repoRoot: string;
  committed: string;
  grown: string;
  findings: string;
}

export function fuzzPaths(repoRoot: string, target: string): FuzzPaths {
  return {
    repoRoot,
    committed: join(repoRoot, 'fuzz', 'corpus', target),
    grown: join(repoRoot, '.cache', 'fuzz', 'corpus', target),
    findings: join(repoRoot, '.cache', 'fuzz', 'findings', target),
  };
}

export function inputName(bytes: Uint8Array): string {
  return createHash('sha1').update(bytes).digest('hex').slice(0, 16);
}

/** Every input file of a folder (not the .txt notes), sorted by name. */
export function readInputs(dir: string): Array<{ name: string; bytes: Uint8Array }> {
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((n) => !n.endsWith('.txt') && !n.startsWith('.'))
    .sort()
    .map((name) => ({ name, bytes: new Uint8Array(readFileSync(join(dir, name))) }));
}

/** Writes an input under its hash (with a prefix); returns the file's path. */
export function saveInput(dir: string, bytes: Uint8Array, prefix = ''): string {
  mkdirSync(dir, { recursive: true });
  const path = join(dir, prefix + inputName(bytes));
  if (!existsSync(path)) writeFileSync(path, bytes);
  return path;
}
