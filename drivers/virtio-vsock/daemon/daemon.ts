// The vhost-user-vsock daemon: one VsockDevice per --vm, served to QEMU over
// vhost-user, with its host ends (hybrid Unix socket, TCP forwards).
//
// INTEGRATION POINT: startDaemon() takes the vhost-user server as a factory
// (createVhostUserServer). The default, defaultVhostUserServerFactory, uses
// kernel/vhost-user (startVhostUserServer), which maps QEMU's memory and turns its kicks
// into kick() calls on the device; tests pass a fake.
import type { VirtioDeviceModel } from '../../../kernel/transport/virtio-device.js';
import { VsockDevice } from '../device/vsock-device.js';
import { HybridVsockBackend } from '../host/hybrid-unix.js';
import { TcpForward } from '../host/tcp-forward.js';
import type { DaemonConfig } from './config.js';

export interface VhostUserServerHandle {
  close(): Promise<void>;
}

/** What a vhost-user front end did (for boot timelines): connected, or mapped guest memory (the driver set DRIVER_OK). */
export type FrontEndEvent = 'connected' | 'memory-mapped';

export type VhostUserServerFactory = (opts: {
  socketPath: string;
  model: VirtioDeviceModel;
  log: (message: string) => void;
  onFrontEnd?: (event: FrontEndEvent) => void;
}) => Promise<VhostUserServerHandle>;

/** kernel/vhost-user, loaded on first use (it needs the native addon). */
export const defaultVhostUserServerFactory: VhostUserServerFactory = async ({ socketPath, model, log, onFrontEnd }) => {
  const { startVhostUserServer } = await import('../../../kernel/vhost-user/index.js');
  const server = await startVhostUserServer({
    socketPath,
    model,
    log: (level, message) => {
      if (level !== 'debug') log(`vhost-user ${level}: ${message}`);
    },
  });
  server.on('protocol-error', (err: Error) => log(`vhost-user ${socketPath}: front end dropped: ${err.message}`));
  server.on('warning', (err: Error) => log(`vhost-user ${socketPath}: ${err.message}`));
  server.on('device-error', (err: Error) => log(`vhost-user ${socketPath}: device error: ${err.message}`));
  server.on('error', (err: Error) => log(`vhost-user ${socketPath}: ${err.message}`));
  if (onFrontEnd) {
    server.on('client-connected', () => onFrontEnd('connected'));
    server.on('memory-mapped', () => onFrontEnd('memory-mapped'));
  }
  return server;
};

export interface DaemonDeps {
  createVhostUserServer?: VhostUserServerFactory;
  log?: (message: string) => void;
  /** A VM's front end (QEMU) connected or mapped guest memory. */
  onFrontEnd?: (guestCid: number, event: FrontEndEvent) => void;
}

export interface RunningDaemon {
  /** The device of each guest, by CID. */
  readonly devices: ReadonlyMap<number, VsockDevice>;
  /** The TCP forwards, in --forward order (address() gives the bound port). */
  readonly forwards: readonly TcpForward[];
  close(): Promise<void>;
}

export async function startDaemon(config: DaemonConfig, deps: DaemonDeps = {}): Promise<RunningDaemon> {
  const log = deps.log ?? ((m: string) => process.stderr.write(`${m}\n`));
  const createServer = deps.createVhostUserServer ?? defaultVhostUserServerFactory;
  const devices = new Map<number, VsockDevice>();
  const forwards: TcpForward[] = [];
  const closers: Array<() => Promise<void>> = [];
  const close = async (): Promise<void> => {
    for (const c of closers.splice(0).reverse()) {
      try {
        await c();
      } catch (e) {
        log(`vhost-user-vsock: while closing: ${(e as Error).message}`);
      }
    }
  };
  try {
    for (const vm of config.vms) {
      const device = new VsockDevice({ guestCid: vm.guestCid, log: (m) => log(`cid ${vm.guestCid}: ${m}`) });
      devices.set(vm.guestCid, device);
      if (vm.udsPath !== null) {
        const hybrid = new HybridVsockBackend({ host: device.host, udsPath: vm.udsPath, log: (m) => log(`cid ${vm.guestCid}: ${m}`) });
        await hybrid.listen();
        closers.push(() => hybrid.close());
      }
      const onFrontEnd = deps.onFrontEnd;
      const server = await createServer({ socketPath: vm.socketPath, model: device, log, ...(onFrontEnd ? { onFrontEnd: (e: FrontEndEvent) => onFrontEnd(vm.guestCid, e) } : {}) });
      closers.push(() => server.close());
      log(`vhost-user-vsock: guest CID ${vm.guestCid}: vhost-user at ${vm.socketPath}${vm.udsPath ? `, hybrid vsock at ${vm.udsPath}` : ''}`);
    }
    for (const f of config.forwards) {
      const device = devices.get(f.guestCid)!;
      const fwd = new TcpForward({ host: device.host, listenHost: f.listenHost, listenPort: f.listenPort, guestPort: f.guestPort, log });
      const addr = await fwd.listen();
      forwards.push(fwd);
      closers.push(() => fwd.close());
      log(`vhost-user-vsock: forwarding ${addr.address}:${addr.port} -> ${f.guestCid}:${f.guestPort}`);
    }
  } catch (e) {
    await close();
    throw e;
  }
  return { devices, forwards, close };
}
