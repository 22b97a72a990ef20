// The vsock device as a worker-thread device module for the in-process transport
// (kernel/transport/inprocess-worker.ts): tests and benchmarks run the device, and
// host applications on it, in a worker.
//
// options: { guestCid, apps?: [{ kind: 'echo' | 'sink' | 'source', port, bytes?, readDelayMs? }] }
// Each app listens on its host port; every closed connection posts a HostAppReport.
// Messages (InProcessTransport.postToDevice):
//   { cmd: 'connect', id, port, kind, bytes?, readDelayMs? } -> { id, ok: true } | { id, ok: false, code }
//   { cmd: 'transport-reset', id? }                          -> { id, ok: true, delivered } when id is given
//   { cmd: 'stats', id }                                     -> { id, stats }
import type { DeviceWorkerEnv } from '../../../kernel/transport/inprocess-worker.js';
import type { VirtioDeviceModel } from '../../../kernel/transport/virtio-device.js';
import { runHostApp, type HostAppKind, type HostAppSpec } from '../host/apps.js';
import type { VsockDeviceStats } from './stats.js';
import { VsockDevice } from './vsock-device.js';

export interface WorkerDeviceOptions {
  guestCid: number;
  apps?: HostAppSpec[];
}

export interface WorkerDeviceStats extends VsockDeviceStats {
  connections: number;
  /** Bytes held on the host side (both directions, all connections). */
  hostBufferedBytes: number;
}

type Command =
  | { cmd: 'connect'; id: number; port: number; kind: HostAppKind; bytes?: number; readDelayMs?: number }
  | { cmd: 'transport-reset'; id?: number }
  | { cmd: 'stats'; id: number };

const KINDS: readonly string[] = ['echo', 'sink', 'source'];

export function createDevice(options: unknown, env: DeviceWorkerEnv): VirtioDeviceModel {
  const opts = options as WorkerDeviceOptions;
  const device = new VsockDevice({ guestCid: opts.guestCid, log: (m) => env.post({ log: m }) });
  for (const app of opts.apps ?? []) {
    if (!KINDS.includes(app.kind)) throw new Error(`vsock worker device: unknown app kind ${String(app.kind)}`);
    device.host.listen(app.port, (s) => runHostApp(app, s, (r) => env.post(r)));
  }
  env.onMessage((m) => {
    const c = m as Command;
    switch (c.cmd) {
      case 'connect': {
        const spec: HostAppSpec = { kind: c.kind, port: c.port, bytes: c.bytes, readDelayMs: c.readDelayMs };
        device.host.connect(c.port).then(
          (s) => {
            runHostApp(spec, s, (r) => env.post(r));
            env.post({ id: c.id, ok: true });
          },
          (e: NodeJS.ErrnoException) => env.post({ id: c.id, ok: false, code: e.code ?? 'EIO' }),
        );
        break;
      }
      case 'transport-reset': {
        const delivered = device.transportReset();
        if (c.id !== undefined) env.post({ id: c.id, ok: true, delivered });
        break;
      }
      case 'stats': {
        const stats: WorkerDeviceStats = {
          ...device.stats,
          dropped: { ...device.stats.dropped },
          connections: device.connections,
          hostBufferedBytes: device.hostBufferedBytes,
        };
        env.post({ id: c.id, stats });
        break;
      }
    }
  });
  return device;
}
