#!/usr/bin/env node
// tsvirtio: the runtime's command line.
//   tsvirtio start [FLAGS]    the sample appliance: the webserver and ping-pong in a guest (npm start)
//   tsvirtio --help
//
// Flags are parsed before anything is built: the parser (appliance/cli/*-args.ts, no
// heavy imports) is transpiled on the fly, so --help and a mistyped flag answer at once
// even when the tree has changed since the last build. Then it builds what changed,
// without the type-check (npm test and CI type-check), and runs.
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));

const HELP = `usage: tsvirtio <command> [flags]

commands:
  start [flags]   boot the sample appliance (the webserver and ping-pong) and serve
                  its website; \`tsvirtio start --help\` lists the flags (npm start runs this)
`;

/** Imports a TypeScript module of the tree without a build: esbuild bundles it into memory. */
async function importSource(relPath) {
  const esbuild = await import('esbuild');
  const out = await esbuild.build({
    entryPoints: [resolve(root, relPath)],
    bundle: true,
    write: false,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    logLevel: 'error',
  });
  return import(`data:text/javascript;base64,${Buffer.from(out.outputFiles[0].text).toString('base64')}`);
}

async function start(argv) {
  const cli = await importSource('appliance/cli/start-args.ts');
  let args;
  try {
    args = cli.parseMainArgs(argv);
  } catch (e) {
    if (!(e instanceof cli.UsageError)) throw e;
    process.stderr.write(`appliance: ${e.message}\n${cli.USAGE}`);
    return 2;
  }
  if (args.help) {
    process.stdout.write(cli.USAGE);
    return 0;
  }
  const { build, BuildError } = await import('../build.mjs');
  try {
    await build({ typecheck: false, quiet: !args.verbose });
  } catch (e) {
    process.stderr.write(`appliance: the build failed: ${e instanceof BuildError ? e.message : (e.stack ?? e)}\n`);
    return 1;
  }
  const { runStart } = await import('../dist/appliance/main.js');
  return runStart(args);
}

const [command, ...rest] = process.argv.slice(2);
let status;
switch (command) {
  case 'start':
    status = await start(rest);
    break;
  case undefined:
  case '--help':
  case '-h':
  case 'help':
    process.stdout.write(HELP);
    status = command === undefined ? 2 : 0;
    break;
  default:
    process.stderr.write(`tsvirtio: unknown command ${JSON.stringify(command)}\n${HELP}`);
    status = 2;
}
process.exitCode = status;
// Nothing of ours is left running; leave no handle keeping the process alive.
setTimeout(() => process.exit(), 200).unref();
