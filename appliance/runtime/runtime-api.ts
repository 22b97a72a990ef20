// What the runtime (launcher.ts, in the guest) hands the program's API module (guest.ts):
// one object under a global symbol, installed before the program is loaded. The program
// is bundled on its own (`tsvirtio run APP`) and may start from a V8 startup snapshot
// that holds the runtime but not the program, so the two meet here, at run time, not
// through a shared module instance. Types only from the drivers: guest.ts stays a few
// lines in the program's bundle.
import type { VirtioFsDriver } from '../../drivers/virtio-fs/driver/index.js';
import type { ConnectOptions, TxMode, VsockServer, VsockSocket } from '../../drivers/virtio-vsock/index.js';
import { GuestApiError } from './errors.js';

/** A folder shared by the host (`--share DIR[:TAG]`), read-only, with node:fs/promises shapes. */
export type SharedFolder = Pick<VirtioFsDriver, 'tag' | 'readFile' | 'stat' | 'lstat' | 'readdir' | 'readlink' | 'open' | 'statfs'>;

export interface GuestRuntime {
  /** This guest's vsock CID. */
  readonly cid: number;
  /** How the vsock driver transmits (`tsvirtio run --tx-mode`). */
  readonly txMode: TxMode;
  /** The shared folders, in the order of the --share flags. */
  readonly shares: readonly SharedFolder[];
  createServer(onConnection?: (socket: VsockSocket) => void): VsockServer;
  connect(options: ConnectOptions, onConnect?: () => void): VsockSocket;
  /** A buffer in DMA memory: written to a vsock socket, it is sent without a copy. */
  allocBuffer(size: number): Buffer;
  freeBuffer(buffer: Uint8Array): void;
  /** Ends the program now with `status` (the devices are reset first). */
  exit(status: number): never;
}

const RUNTIME_KEY = Symbol.for('tsvirtio.guest.runtime');
type Holder = { [RUNTIME_KEY]?: GuestRuntime };

/** Makes `runtime` the one the API uses (the launcher, before it loads the program; tests). */
export function installRuntime(runtime: GuestRuntime | null): void {
  if (runtime === null) delete (globalThis as Holder)[RUNTIME_KEY];
  else (globalThis as Holder)[RUNTIME_KEY] = runtime;
}

/** The installed runtime; throws ERR_TSVIRTIO_NOT_IN_GUEST naming `what` when there is none. */
export function currentRuntime(what: string): GuestRuntime {
  const rt = (globalThis as Holder)[RUNTIME_KEY];
  if (rt === undefined) throw new GuestApiError('ERR_TSVIRTIO_NOT_IN_GUEST', `tsvirtio/guest ${what}: not running in a tsvirtio guest (start the program with \`npx tsvirtio run APP\`)`);
  return rt;
}

/** True inside a guest started by `tsvirtio run`. */
export function runtimeInstalled(): boolean {
  return (globalThis as Holder)[RUNTIME_KEY] !== undefined;
}
