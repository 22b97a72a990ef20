// The command line of `tsvirtio run APP [flags] [-- ARGS]`: parsed before anything is
// built (bin/tsvirtio.mjs transpiles this module on the fly), so --help and a mistyped
// flag answer at once. No imports that need a build or pull in the runtime.
import { existsSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { MAX_SHARES } from '../runtime/launcher-args.js';
import { type ProgramCommandArgs, UsageError, parseProgramCommand, parseTag, programCommandDefaults } from './flags.js';

export { UsageError } from './flags.js';

export const RUN_USAGE = `usage: tsvirtio run APP [--forward [HOST:]PORT=GUEST_PORT]... [--share DIR[:TAG]]... [--memory MiB]
                    [--machine microvm|q35] [--icu en|full] [--tx-mode M] [--console] [--verbose] [--help] [-- ARGS]

Boots APP (a .js or .ts file, or a folder with a main.ts, bundled with esbuild) as the
only program of a QEMU guest; it imports its API from 'tsvirtio/guest'
(appliance/runtime/README.md, examples/README.md). The program's output is this
command's stdout; tsvirtio's own lines go to stderr. Exits with the program's exit
status when it ends; Ctrl-C stops the guest (status 130).

  --forward [HOST:]PORT=GUEST_PORT
                  listen on HOST:PORT (HOST default 127.0.0.1; PORT 0: any free
                  port, printed) and connect each client to the program's vsock
                  port GUEST_PORT; repeatable
  --share DIR[:TAG]
                  share a host folder with the program, read-only (virtiofsd);
                  TAG default "share"; the first is files in tsvirtio/guest, every
                  one share(TAG); repeatable, distinct tags
  --memory MiB    guest RAM (default 128 on microvm, 1024 on q35); less than the
                  image needs is refused before the launch, with what it needs
  --machine M     microvm (default: our kernel, virtio-mmio, boots in about 2 s) or
                  q35 (PCI devices, Debian's kernel)
  --icu D         node's ICU data on microvm: en (default, English only) or full
                  (every locale, e.g. de-DE formatting; a 16 MB larger image)
  --tx-mode M     how the vsock driver transmits: auto (default), two-copy,
                  single-copy, zero-copy
  --console       the guest's whole serial console on stderr (kernel, runtime)
  --verbose       the build's steps, image and boot progress, the vsock daemon's log
  --help          this text
  -- ARGS         the program's own arguments (process.argv.slice(2) in the guest;
                  at most 19, no double quotes)
`;

export interface ForwardSpec {
  host: string;
  port: number;
  guestPort: number;
}

export interface ShareSpec {
  dir: string;
  tag: string;
}

export interface RunArgs extends ProgramCommandArgs {
  forwards: ForwardSpec[];
  shares: ShareSpec[];
  console: boolean;
}

/** The tag of a --share without one. */
export const DEFAULT_SHARE_TAG = 'share';

/** `[HOST:]PORT=GUEST_PORT`; HOST an IPv4 address, a name, or [IPv6]. */
export function parseForward(v: string): ForwardSpec {
  const m = /^(?:(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):)?(\d{1,5})=(\d{1,10})$/.exec(v);
  if (!m) throw new UsageError(`--forward: expected [HOST:]PORT=GUEST_PORT (e.g. 127.0.0.1:8080=80), got ${JSON.stringify(v)}`);
  const host = m[1] === undefined ? '127.0.0.1' : m[1].replace(/^\[|\]$/g, '');
  const port = Number(m[2]);
  const guestPort = Number(m[3]);
  if (port > 65535) throw new UsageError(`--forward: host port ${port} is out of range 0..65535 (in ${JSON.stringify(v)})`);
  if (guestPort < 1 || guestPort > 0xfffffffe) throw new UsageError(`--forward: guest port ${guestPort} is out of range 1..4294967294 (in ${JSON.stringify(v)})`);
  return { host, port, guestPort };
}

/** `DIR[:TAG]`: the part after the last colon is the tag when it looks like one. */
export function parseShare(v: string): ShareSpec {
  if (v === '') throw new UsageError('--share: empty path');
  const colon = v.lastIndexOf(':');
  const suffix = colon < 0 ? '' : v.slice(colon + 1);
  if (suffix === 'rw') throw new UsageError(`--share: ${JSON.stringify(v)}: shares are read-only (the guest's virtio-fs driver does not write); drop ":rw"`);
  const tagged = colon > 0 && !suffix.includes('/');
  const dir = resolve(tagged ? v.slice(0, colon) : v);
  const tag = tagged ? parseTag(suffix, '--share') : DEFAULT_SHARE_TAG;
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new UsageError(`--share: ${dir} is not a directory`);
  return { dir, tag };
}

export function parseRunArgs(argv: readonly string[]): RunArgs {
  const a: RunArgs = { ...programCommandDefaults(), forwards: [], shares: [], console: false };
  return parseProgramCommand(argv, a, 'run', (flag, value) => {
    switch (flag) {
      case '--forward': {
        const f = parseForward(value());
        const same = a.forwards.find((o) => o.port !== 0 && o.port === f.port && o.host === f.host);
        if (same) throw new UsageError(`--forward: ${f.host}:${f.port} is forwarded twice`);
        a.forwards.push(f);
        return true;
      }
      case '--share': {
        const s = parseShare(value());
        if (a.shares.some((o) => o.tag === s.tag)) throw new UsageError(`--share: the tag ${JSON.stringify(s.tag)} is used twice (name each folder: DIR:TAG)`);
        if (a.shares.length === MAX_SHARES) throw new UsageError(`--share: at most ${MAX_SHARES} folders`);
        a.shares.push(s);
        return true;
      }
      case '--console':
        a.console = true;
        return true;
      default:
        return false;
    }
  });
}
