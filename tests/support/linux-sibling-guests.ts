// Guests that reach each other through one vhost-user-vsock daemon (sibling routing,
// --vm ...,group=NAME): the daemon in this process with one VM per guest, all in one
// group, and stock-Linux guests booted against it. For Linux's own vsock_test, whose
// control channel is TCP, the Linux guests also share a network link on loopback only
// (QEMU -netdev socket: the first guest listens on 127.0.0.1, the others connect) with
// static addresses 10.0.0.<index+1>/24.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { InitramfsFile } from '../../appliance/image/initramfs.js';
import { startLinuxGuest, type LinuxGuest } from '../../appliance/qemu/start.js';
import { parseArgs, type DaemonConfig } from '../../drivers/virtio-vsock/daemon/config.js';
import { startDaemon, type RunningDaemon } from '../../drivers/virtio-vsock/daemon/daemon.js';
import { freeTcpPort } from './ports.js';

export const SIBLING_GROUP = 'siblings';

export interface SiblingDaemon {
  dir: string;
  daemon: RunningDaemon;
  logs: string[];
  /** The vhost-user socket of VM `cid`. */
  socket(cid: number): string;
  /** The hybrid Unix socket of VM `cid`. */
  uds(cid: number): string;
  dispose(): Promise<string>;
}

/** The daemon with one VM per CID, all in SIBLING_GROUP, each with a hybrid socket. */
export async function startSiblingDaemon(prefix: string, cids: readonly number[]): Promise<SiblingDaemon> {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const socket = (cid: number): string => join(dir, `vhost${cid}.sock`);
  const uds = (cid: number): string => join(dir, `vm${cid}.vsock`);
  const args = cids.flatMap((cid) => ['--vm', `guest-cid=${cid},socket=${socket(cid)},uds-path=${uds(cid)},group=${SIBLING_GROUP}`]);
  const { config } = parseArgs(args) as { help: false; config: DaemonConfig };
  const logs: string[] = [];
  let daemon: RunningDaemon;
  try {
    daemon = await startDaemon(config, { log: (m) => logs.push(m) });
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  return {
    dir,
    daemon,
    logs,
    socket,
    uds,
    dispose: async () => {
      await daemon.close();
      rmSync(dir, { recursive: true, force: true });
      return logs.slice(-60).join('\n');
    },
  };
}

export interface NetworkedLinuxGuests {
  guests: LinuxGuest[];
  /** The guest's address on the link: 10.0.0.<i+1>. */
  address(i: number): string;
  /** Stops every QEMU started (by its pid, through qemu.stop). */
  stop(): Promise<void>;
}

/**
 * Boots one stock-Linux guest per CID against the daemon (vhost-user-vsock), linked by a
 * loopback-only QEMU socket network, each with `files` in its image, and configures the
 * link. On failure every QEMU started is stopped before the error is thrown.
 */
export async function startNetworkedLinuxGuests(fx: SiblingDaemon, cids: readonly number[], files: InitramfsFile[], safetyTimeoutMs: number): Promise<NetworkedLinuxGuests> {
  const port = await freeTcpPort();
  const started: LinuxGuest[] = [];
  const pending: Array<Promise<LinuxGuest>> = [];
  const stop = async (): Promise<void> => {
    const all = await Promise.allSettled(pending);
    for (const r of all) if (r.status === 'fulfilled' && r.value.qemu.running) await r.value.qemu.stop();
  };
  try {
    for (let i = 0; i < cids.length; i++) {
      const cid = cids[i]!;
      const netdev = i === 0 ? `socket,id=n0,listen=127.0.0.1:${port}` : `socket,id=n0,connect=127.0.0.1:${port}`;
      const mac = `52:54:00:00:00:${(i + 1).toString(16).padStart(2, '0')}`;
      const p = startLinuxGuest({
        image: { name: 'linux-guest-siblings', modules: ['virtio_net'], files },
        launch: { vhostUserVsock: { socket: fx.socket(cid) }, timeoutMs: safetyTimeoutMs, extraArgs: ['-netdev', netdev, '-device', `virtio-net-pci,netdev=n0,mac=${mac}`] },
      });
      pending.push(p);
      // The listening side must be up before the others connect to it.
      if (i === 0) started.push(await p);
    }
    for (const p of pending.slice(1)) started.push(await p);
    const address = (i: number): string => `10.0.0.${i + 1}`;
    for (let i = 0; i < started.length; i++) {
      const r = await started[i]!.shell.run(`ip link set lo up && ip link set eth0 up && ip addr add ${address(i)}/24 dev eth0 && echo net-ok`);
      if (!r.output.includes('net-ok')) throw new Error(`guest ${i}: network set-up failed: ${r.output}`);
    }
    return { guests: started, address, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}
