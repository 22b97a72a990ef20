// One call to build a guest image and boot it: what most QEMU tests need.

import { buildLinuxGuest, type LinuxGuestOptions } from '../image/linux-guest.js';
import { buildNodeGuest, type NodeGuestOptions } from '../image/node-guest.js';
import { bootOptions, type AnyGuestImage, type GuestImage } from '../image/guest.js';
import { GuestShell } from './guest-shell.js';
import { launchQemu, type QemuExit, type QemuInstance, type QemuOptions } from './launch.js';

/** Launch options other than the image (memory, vhost-user sockets, echo, timeout...). */
export type LaunchOptions = Omit<QemuOptions, 'machine' | 'kernel' | 'initrd' | 'rootfs' | 'append'>;

export interface LinuxGuest {
  image: GuestImage;
  qemu: QemuInstance;
  shell: GuestShell;
  /** Milliseconds from QEMU's start to the shell's ready line. */
  bootMs: number;
}

/**
 * Builds (cached) and boots the stock-Linux guest and waits for its shell. When the shell
 * does not come up, QEMU is stopped before the error is thrown.
 */
export async function startLinuxGuest(
  opts: { image?: LinuxGuestOptions; launch?: LaunchOptions; readyTimeoutMs?: number } = {},
): Promise<LinuxGuest> {
  const image = await buildLinuxGuest(opts.image);
  const qemu = launchQemu({ ...opts.launch, ...bootOptions(image) });
  try {
    const shell = await GuestShell.attach(qemu, { readyTimeoutMs: opts.readyTimeoutMs ?? 180000 });
    return { image, qemu, shell, bootMs: qemu.elapsedMs() };
  } catch (err) {
    await qemu.stop();
    throw err;
  }
}

export interface NodeGuestRun {
  image: AnyGuestImage;
  qemu: QemuInstance;
}

/** Builds (cached) and boots the node guest; `qemu.exited` gives node's exit status. */
export async function startNodeGuest(opts: NodeGuestOptions & { launch?: LaunchOptions }): Promise<NodeGuestRun> {
  const image = await buildNodeGuest(opts);
  const qemu = launchQemu({ ...opts.launch, ...bootOptions(image) });
  return { image, qemu };
}

/** Boots the node guest, waits for it to finish and returns the exit and the console output. */
export async function runNodeGuest(
  opts: NodeGuestOptions & { launch?: LaunchOptions },
): Promise<{ image: AnyGuestImage; exit: QemuExit; console: string }> {
  const { image, qemu } = await startNodeGuest(opts);
  try {
    const exit = await qemu.exited;
    return { image, exit, console: qemu.console() };
  } finally {
    if (qemu.running) await qemu.stop();
  }
}
