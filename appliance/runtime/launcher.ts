// The guest program of `tsvirtio run` and `tsvirtio build` (bundled to
// dist/bundles/runtime.js and, for the V8 startup snapshot, dist/bundles/runtime.cjs;
// booted as /app/main.js or from /app/main.blob): it boots (kernel/guest/boot.ts: DMA
// memory, panic handlers), opens the vsock device and one virtio-fs device per shared
// folder, installs the runtime behind tsvirtio/guest, then loads the user's program
// (/app/program.mjs, program-loader.ts) and exits with its status.
//
// Flags (launcher-args.ts) come from the kernel command line; a bad one: "tsvirtio-runtime:
// <what>" and status 2, before boot(). Console lines: boot()'s and ours start with
// "tsvirtio-runtime: ", boot stages with "tsvirtio-stage: "; `program-start` is printed
// just before the program is loaded: every other line after it is the program's output
// (the host's `tsvirtio run` copies those to its stdout).
//
// Started from the snapshot, this module's top level ran when the snapshot was built:
// nothing at top level may touch the system, process.argv or the addon.
import { VirtioFsDriver } from '../../drivers/virtio-fs/driver/index.js';
import { VsockDriver } from '../../drivers/virtio-vsock/index.js';
import { type GuestTransport, boot } from '../../kernel/guest/boot.js';
import { startProgram } from '../../kernel/guest/startup-snapshot.js';
import { AUTO_ZERO_COPY_MIN_BYTES } from '../run/guest-defaults.js';
import { createGuestRuntime } from './guest-runtime.js';
import { FS_CHUNKS, LOADER_PATH, type LauncherArgs, PROGRAM_PATH, PROGRAM_START_STAGE, RUNTIME_NAME, parseLauncherArgs } from './launcher-args.js';
import { importProgram, runProgram } from './program-loader.js';
import { installRuntime } from './runtime-api.js';

const VIRTIO_ID_VSOCK = 19;
const VIRTIO_ID_FS = 26;

function main(): void {
  let args: LauncherArgs;
  try {
    args = parseLauncherArgs(process.argv.slice(2));
  } catch (e) {
    process.stdout.write(`${RUNTIME_NAME}: ${(e as Error).message}\n`);
    process.exitCode = 2;
    return;
  }
  boot(
    RUNTIME_NAME,
    async (ctx) => {
      const devOpts = { pollWindowMs: args.pollWindowMs };
      const transports: GuestTransport[] = [];
      const open = (id: number, index: number): GuestTransport => {
        const t = ctx.openVirtioDevice(id, { ...devOpts, index });
        transports.push(t);
        return t;
      };
      // All at once: the vsock device is set up while FUSE_INIT travels to each virtiofsd.
      const [vsock, ...shares] = await Promise.all([
        VsockDriver.start(open(VIRTIO_ID_VSOCK, 0), { txMode: args.txMode, autoZeroCopyMinBytes: AUTO_ZERO_COPY_MIN_BYTES }),
        ...Array.from({ length: args.shares }, (_, i) => VirtioFsDriver.start(open(VIRTIO_ID_FS, i), { chunkCount: FS_CHUNKS })),
      ]);
      ctx.stage('devices-ready');
      ctx.log(`vsock cid ${vsock.localCid}, tx mode ${vsock.txMode}; shared folders: ${shares.map((s) => s.tag).join(', ') || 'none'}`);
      installRuntime(
        createGuestRuntime({
          vsock,
          shares,
          exit: (status) => {
            // As process.exit(): now. The devices stop using DMA memory before it goes away.
            vsock.close();
            for (const t of transports) {
              try {
                t.reset();
              } catch {
                /* keep going: the process ends anyway */
              }
            }
            process.exit(status);
          },
        }),
      );
      // The program sees the arguments of `node program.mjs ARGS`.
      process.argv.splice(1, process.argv.length - 1, PROGRAM_PATH, ...args.programArgs);
      ctx.stage(PROGRAM_START_STAGE);
      const status = await runProgram(await importProgram(PROGRAM_PATH, LOADER_PATH), (line) => ctx.log(line));
      for (const s of shares) await s.close();
      vsock.close();
      return status;
    },
    { dmaPages: args.dmaPages },
  );
}

startProgram(main);
