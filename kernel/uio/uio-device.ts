// A device bound to a uio driver (drivers/uio/uio.c): whichever bus it sits on (PCI with
// uio_pci_generic, platform with uio_pdrv_genirq), it shows up as one child directory
// <device>/uio/uioN in sysfs and a character device /dev/uioN whose reads wait for
// interrupts.
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

export interface UioDevice {
  /** "uio0" */
  name: string;
  number: number;
  /** "/dev/uio0" */
  devPath: string;
  /** The uio device's sysfs directory, <device>/uio/uio0 (maps/, name, version...). */
  sysfsPath?: string;
}

export type UioLookupErrorCode =
  | 'ERR_UIO_NOT_BOUND' // no <device>/uio directory, or not exactly one entry in it
  | 'ERR_UIO_NAME' // an entry that is not "uioN"
  | 'ERR_UIO_NO_NODE'; // /dev/uioN is missing

/** Why findUioDevice failed; each bus layer rethrows it as its own error type. */
export class UioLookupError extends Error {
  constructor(
    readonly code: UioLookupErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'UioLookupError';
  }
}

const show = (text: string): string => JSON.stringify(text.length > 80 ? text.slice(0, 80) + '...' : text);

/** The uio device of a device bound to a uio driver: the single entry of <device>/uio/. */
export function findUioDevice(devicePath: string, devDir = '/dev'): UioDevice {
  const dir = join(devicePath, 'uio');
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (e) {
    throw new UioLookupError('ERR_UIO_NOT_BOUND', `${dir} is missing: the device is not bound to a uio driver`, { cause: e });
  }
  if (names.length !== 1) throw new UioLookupError('ERR_UIO_NOT_BOUND', `${dir} holds ${names.length} entries (${names.join(', ')}), expected one uioN`);
  const name = names[0]!;
  const m = /^uio(\d{1,4})$/.exec(name);
  if (!m) throw new UioLookupError('ERR_UIO_NAME', `not a uio device name: ${show(name)}`);
  const devPath = join(devDir, name);
  if (!existsSync(devPath)) throw new UioLookupError('ERR_UIO_NO_NODE', `${devPath} does not exist (is devtmpfs mounted on ${devDir}?)`);
  return { name, number: Number(m[1]), devPath, sysfsPath: join(dir, name) };
}
