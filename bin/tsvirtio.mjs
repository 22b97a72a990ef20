#!/usr/bin/env node
// tsvirtio: the runtime's command line.
//   tsvirtio start [FLAGS]            the sample appliance: the webserver and ping-pong in a guest (npm start)
//   tsvirtio run APP [FLAGS] [-- ARGS]  a program of yours as the guest's only program
//   tsvirtio build APP -o DIR         its kernel, root file system and a launch script for plain QEMU
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
  run APP [flags] [-- ARGS]
                  boot APP (a .js or .ts file using 'tsvirtio/guest') as the guest's
                  only program; exits with its status (\`tsvirtio run --help\`)
  build APP -o DIR
                  write APP's kernel, root file system and launch.sh for plain
                  qemu-system-x86_64 and any vhost-user-vsock back end
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

/**
 * One command: parse its flags with the light module (usage errors: exit 2, --help: exit
 * 0, both before any build), build what changed without the type-check (its lines on
 * stderr where stdout is the program's), then run.
 */
async function runCommand(argv, { argsModule, parse, usage, prefix, runModule, run, buildToStderr = false }) {
  const cli = await importSource(argsModule);
  let args;
  try {
    args = cli[parse](argv);
  } catch (e) {
    if (!(e instanceof cli.UsageError)) throw e;
    process.stderr.write(`${prefix}: ${e.message}\n${cli[usage]}`);
    return 2;
  }
  if (args.help) {
    process.stdout.write(cli[usage]);
    return 0;
  }
  // TSVIRTIO_NO_BUILD=1: dist/ as it is (tests that run a command while the suite runs).
  if (process.env.TSVIRTIO_NO_BUILD !== '1') {
    const { build, BuildError } = await import('../build.mjs');
    try {
      await build({ typecheck: false, quiet: !args.verbose, ...(buildToStderr ? { output: (line) => process.stderr.write(`${line}\n`) } : {}) });
    } catch (e) {
      process.stderr.write(`${prefix}: the build failed: ${e instanceof BuildError ? e.message : (e.stack ?? e)}\n`);
      return 1;
    }
  }
  const mod = await import(runModule);
  return mod[run](args);
}

const COMMANDS = {
  start: { argsModule: 'appliance/cli/start-args.ts', parse: 'parseMainArgs', usage: 'USAGE', prefix: 'appliance', runModule: '../dist/appliance/main.js', run: 'runStart' },
  run: { argsModule: 'appliance/cli/run-args.ts', parse: 'parseRunArgs', usage: 'RUN_USAGE', prefix: 'tsvirtio run', runModule: '../dist/appliance/runtime/host/run-program.js', run: 'runProgramCommand', buildToStderr: true },
  build: { argsModule: 'appliance/cli/build-args.ts', parse: 'parseBuildArgs', usage: 'BUILD_USAGE', prefix: 'tsvirtio build', runModule: '../dist/appliance/runtime/host/build-program.js', run: 'buildProgramCommand', buildToStderr: true },
};

const [command, ...rest] = process.argv.slice(2);
let status;
switch (command) {
  case 'start':
  case 'run':
  case 'build':
    status = await runCommand(rest, COMMANDS[command]);
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
