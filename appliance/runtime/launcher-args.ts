// The launcher's flags (kernel command line -> process.argv of the guest's node), written
// by the host (`tsvirtio run`, `tsvirtio build`) and read by launcher.ts:
//   --shares=N --dma-pages=N --tx-mode=M --poll-window-ms=N [-- PROGRAM ARGS...]
// The program finds its own arguments in process.argv.slice(2), as under node. No
// imports that pull in the runtime: the host reads this module too.
import { UsageError, parseTxMode, readFlags } from '../cli/flags.js';
import { DEFAULT_POLL_WINDOW_MS, type TX_MODES } from '../run/guest-defaults.js';

export type TxModeName = (typeof TX_MODES)[number];

/** boot()'s name in the launcher: the prefix of the runtime's own console lines. */
export const RUNTIME_NAME = 'tsvirtio-runtime';
/** The boot stage the launcher marks right before it loads the program (the host waits for it). */
export const PROGRAM_START_STAGE = 'program-start';

/** Where the image puts the program's bundle and the loader (program-loader.ts). */
export const PROGRAM_PATH = '/app/program.mjs';
export const LOADER_PATH = '/app/load-program.cjs';

export interface LauncherArgs {
  /** virtio-fs devices to open, one per shared folder. */
  shares: number;
  /** 2 MiB DMA pages (the image reserves as many hugepages). */
  dmaPages: number;
  txMode: TxModeName;
  /** Polling after each interrupt (kernel/guest/interrupts.ts); 0: interrupts only. */
  pollWindowMs: number;
  /** The program's own arguments. */
  programArgs: string[];
}

/** The most shared folders a program gets (one virtio-fs device and one virtiofsd each). */
export const MAX_SHARES = 8;

/**
 * DMA memory of a program: the vsock driver's rings and pools (~8.5 MiB), 2 MiB of
 * virtio-fs chunks per shared folder, and what is left for allocBuffer(): 12 MiB, plus
 * 4 MiB per shared folder.
 */
export function dmaPagesFor(shares: number): number {
  return 6 + 2 * shares;
}

/** virtio-fs pool chunks of 128 KiB per shared folder (2 MiB; dmaPagesFor counts them). */
export const FS_CHUNKS = 16;

export function formatLauncherArgs(a: LauncherArgs): string[] {
  const out = [`--shares=${a.shares}`, `--dma-pages=${a.dmaPages}`, `--tx-mode=${a.txMode}`, `--poll-window-ms=${a.pollWindowMs}`];
  if (a.programArgs.length > 0) out.push('--', ...a.programArgs);
  return out;
}

/** Parses the launcher's flags; throws UsageError("--flag: what is wrong"). */
export function parseLauncherArgs(argv: readonly string[]): LauncherArgs {
  const a: LauncherArgs = { shares: 0, dmaPages: dmaPagesFor(0), txMode: 'auto', pollWindowMs: DEFAULT_POLL_WINDOW_MS, programArgs: [] };
  let dmaGiven = false;
  readFlags(argv, {
    flag(flag, value) {
      const count = (min: number, max: number): number => {
        const v = value();
        if (!/^\d{1,5}$/.test(v) || Number(v) < min || Number(v) > max) throw new UsageError(`${flag}: expected ${min}..${max}, got ${JSON.stringify(v)}`);
        return Number(v);
      };
      switch (flag) {
        case '--shares':
          a.shares = count(0, MAX_SHARES);
          break;
        case '--dma-pages':
          a.dmaPages = count(1, 2047);
          dmaGiven = true;
          break;
        case '--tx-mode':
          a.txMode = parseTxMode(value());
          break;
        case '--poll-window-ms':
          a.pollWindowMs = count(0, 10_000);
          break;
        default:
          throw new UsageError(`unknown flag ${JSON.stringify(flag)} (the program's own arguments go after --)`);
      }
    },
    positional(arg) {
      throw new UsageError(`unexpected argument ${JSON.stringify(arg)} (the program's own arguments go after --)`);
    },
    rest(args) {
      a.programArgs = [...args];
    },
  });
  if (!dmaGiven) a.dmaPages = dmaPagesFor(a.shares);
  return a;
}
