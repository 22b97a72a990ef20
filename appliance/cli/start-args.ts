// The command line of `npm start` (tsvirtio start): parsed before anything is built, so
// --help and a mistyped flag answer at once (bin/tsvirtio.mjs transpiles this module on
// the fly). No imports that need a build or pull in the runtime.
import { resolve } from 'node:path';
import type { Machine } from '../image/guest.js';
import { DEFAULT_MACHINE } from '../run/machine-defaults.js';
import { type IcuFlag, UsageError, commonFlag, readFlags } from './flags.js';

export const USAGE = `usage: npm start -- [--port N] [--site DIR] [--machine microvm|q35] [--memory MiB] [--drivers ours|kernel] [--ring split|packed] [--icu en|full] [--cold-boot] [--console] [--verbose] [--help]

  --port N        host TCP port of the website (default 8080); ping-pong on N+1
  --site DIR      folder served (default appliance/site)
  --machine M     microvm (default: our kernel; restored from its saved state in
                  under a second, a cold boot takes about 2 s) or q35 (PCI devices, Debian's kernel: for PCI-only setups)
  --memory MiB    guest RAM (default 128 on microvm, 1024 on q35); less than the
                  image needs is refused before the launch, with what it needs
  --drivers D     ours (default: our TypeScript drivers) or kernel (Linux's own;
                  q35 only)
  --ring R        the vsock rings: split (default) or packed (virtio 1.2 2.8: QEMU
                  offers it with packed=on; the virtio-fs rings stay split, as
                  virtiofsd 7.2 has no packed rings)
  --icu D         node's ICU data on microvm: en (default: English only, formats
                  and collates in every locale as English; a 31 MB image) or full
                  (every locale and converter, e.g. de-DE dates; 16 MB larger)
  --cold-boot     microvm: boot the guest every time. By default the first start
                  saves the booted guest's state in .cache/vm-states/ (about 80 MB)
                  and later starts restore it, in under a second
  --console       copy the guest's serial console to stderr
  --verbose       the build's steps and the vsock daemon's log on the terminal
  --help          this text
`;

export { MIN_MEMORY_MIB, UsageError } from './flags.js';

export interface MainArgs {
  port: number;
  /** null: the sample site (appliance/site). */
  site: string | null;
  machine: Machine;
  /** microvm: node's ICU data. */
  icu: IcuFlag;
  /** null: the machine's default. */
  memoryMiB: number | null;
  drivers: 'ours' | 'kernel';
  /** Our drivers' vsock ring layout. */
  ring: 'split' | 'packed';
  /** microvm: save the booted guest's state once and restore it on later starts (false: --cold-boot). */
  vmState: boolean;
  console: boolean;
  /** Build output and the daemon's log on the terminal. */
  verbose: boolean;
  help: boolean;
}

export function parseMainArgs(argv: readonly string[]): MainArgs {
  const a: MainArgs = { port: 8080, site: null, machine: DEFAULT_MACHINE, icu: 'en', memoryMiB: null, drivers: 'ours', ring: 'split', vmState: true, console: false, verbose: false, help: false };
  let machineGiven = false;
  let ringGiven = false;
  readFlags(argv, {
    flag(flag, value) {
      switch (flag) {
        case '--port': {
          const v = value();
          if (!/^\d{1,5}$/.test(v) || Number(v) < 1 || Number(v) > 65534) throw new UsageError(`--port: expected a TCP port 1..65534, got ${JSON.stringify(v)}`);
          a.port = Number(v);
          break;
        }
        case '--site': {
          const v = value();
          if (v === '') throw new UsageError('--site: empty path');
          a.site = resolve(v);
          break;
        }
        case '--drivers': {
          const v = value();
          if (v !== 'ours' && v !== 'kernel') throw new UsageError(`--drivers: expected ours or kernel, got ${JSON.stringify(v)}`);
          a.drivers = v;
          break;
        }
        case '--ring': {
          const v = value();
          if (v !== 'split' && v !== 'packed') throw new UsageError(`--ring: expected split or packed, got ${JSON.stringify(v)}`);
          a.ring = v;
          ringGiven = true;
          break;
        }
        case '--console':
          a.console = true;
          break;
        case '--cold-boot':
          a.vmState = false;
          break;
        default:
          if (!commonFlag(flag, value, a)) throw new UsageError(`unknown flag ${JSON.stringify(flag)}`);
          if (flag === '--machine') machineGiven = true;
      }
    },
    positional(arg) {
      throw new UsageError(`unknown flag ${JSON.stringify(arg)}`);
    },
    rest() {
      throw new UsageError('unknown flag "--"');
    },
  });
  // Linux's own vsock and virtiofs drivers exist only in the q35 image (Debian's kernel).
  if (a.drivers === 'kernel') {
    if (machineGiven && a.machine !== 'q35') throw new UsageError('--drivers kernel runs on --machine q35 only (our microvm kernel has no vsock or virtiofs driver)');
    a.machine = 'q35';
    if (ringGiven) throw new UsageError('--ring chooses the ring layout of our drivers: not with --drivers kernel');
  }
  return a;
}
