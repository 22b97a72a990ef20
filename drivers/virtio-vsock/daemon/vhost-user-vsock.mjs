#!/usr/bin/env node
// Launcher of the vhost-user-vsock daemon (package.json "bin"): runs the transpiled CLI.
// Build first: node build.mjs
import { fileURLToPath } from 'node:url';
const cli = new URL('../../../dist/drivers/virtio-vsock/daemon/cli.js', import.meta.url);
let mod;
try {
  mod = await import(cli.href);
} catch (e) {
  process.stderr.write(`vhost-user-vsock: cannot load ${fileURLToPath(cli)} (run "node build.mjs" first): ${e.message}\n`);
  process.exit(1);
}
process.exitCode = await mod.main(process.argv.slice(2));
