// Guest-side virtio-mmio platform devices on a fake sysfs tree (no kernel): discovery
// (names, drivers, virtio device ids), binding to uio_pdrv_genirq (which files are
// written, in which order; a device the kernel drives as another virtio device is never
// touched), claiming by device id, the strict parsers of uio map files, and mapping a
// register page (a regular file standing in for /dev/uioN).
import test from 'ava';
import fc from 'fast-check';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, relative } from 'node:path';
import { addonAvailable } from '../kernel/native/index.js';
import {
  PlatformError,
  bindToUioPdrvGenirq,
  claimVirtioMmioDevice,
  isVirtioMmioDeviceName,
  listVirtioMmioDevices,
  mapMmioRegisters,
  parseUioMap,
  parseUioMapValue,
  parseVirtioDeviceIdFile,
  readUioMap0,
} from '../kernel/platform/index.js';
import { MmioTransport } from '../kernel/transport/mmio.js';
import { MMIO_DEVICE_ID, MMIO_MAGIC, MMIO_QUEUE_NOTIFY, MMIO_STATUS, MMIO_VERSION, MappedMmioWindow, type MmioRegisterWindow } from '../kernel/transport/mmio-registers.js';
import { DmaArena } from '../kernel/memory/dma.js';

const PAGE = 4096;
const BASE = 0xfeb00000;

interface FakeDevice {
  name: string;
  /** Register block address (QEMU's microvm: 0xfeb00000 + 0x200 * slot). */
  regs: number;
  driver: 'virtio-mmio' | 'uio_pdrv_genirq' | null;
  /** What the registers say (and, when bound to virtio-mmio, sysfs). */
  virtioId: number;
}

interface FakeTree {
  root: string;
  sysfs: string;
  devDir: string;
  devices: string;
  /** Every sysfs write, in order, as [path relative to sysfs, text]. */
  writes: Array<[string, string]>;
  write: (path: string, text: string) => void;
  /** A window over each device's registers (plain memory holding its magic, version and id). */
  windows: Map<string, MmioRegisterWindow>;
  cleanup: () => void;
}

let nextUio = 0;

/**
 * A sysfs tree of platform devices, plus a write function that lands each write in its
 * file and then does what the kernel would: unbind removes the driver link (and the
 * virtio child), bind to uio_pdrv_genirq honours driver_override and creates uio/uioN
 * with map0 and /dev/uioN.
 */
function fakeTree(devs: FakeDevice[], opts: { withUioDriver?: boolean } = {}): FakeTree {
  const root = mkdtempSync(join(tmpdir(), 'sysfs-platform-'));
  const sysfs = join(root, 'sys');
  const devices = join(sysfs, 'bus', 'platform', 'devices');
  const drivers = join(sysfs, 'bus', 'platform', 'drivers');
  const devDir = join(root, 'dev');
  mkdirSync(devices, { recursive: true });
  mkdirSync(devDir);
  const drv = ['virtio-mmio', ...(opts.withUioDriver === false ? [] : ['uio_pdrv_genirq'])];
  for (const d of drv) {
    mkdirSync(join(drivers, d), { recursive: true });
    writeFileSync(join(drivers, d, 'bind'), '');
    writeFileSync(join(drivers, d, 'unbind'), '');
  }
  const byName = new Map(devs.map((d) => [d.name, d]));
  const link = (name: string, driver: string): void => symlinkSync(join('..', '..', 'drivers', driver), join(devices, name, 'driver'));
  const makeUio = (d: FakeDevice): void => {
    const uio = `uio${nextUio++}`;
    const map0 = join(devices, d.name, 'uio', uio, 'maps', 'map0');
    mkdirSync(map0, { recursive: true });
    const offset = d.regs % PAGE;
    writeFileSync(join(map0, 'addr'), `0x${(d.regs - offset).toString(16).padStart(16, '0')}\n`);
    writeFileSync(join(map0, 'size'), `0x${PAGE.toString(16).padStart(16, '0')}\n`);
    writeFileSync(join(map0, 'offset'), `0x${offset.toString(16)}\n`);
    writeFileSync(join(devDir, uio), '');
  };
  for (const d of devs) {
    mkdirSync(join(devices, d.name));
    writeFileSync(join(devices, d.name, 'driver_override'), '(null)\n');
    if (d.driver) link(d.name, d.driver);
    if (d.driver === 'virtio-mmio') {
      mkdirSync(join(devices, d.name, `virtio${d.virtioId}`));
      writeFileSync(join(devices, d.name, `virtio${d.virtioId}`, 'device'), `0x${d.virtioId.toString(16).padStart(4, '0')}\n`);
    }
    if (d.driver === 'uio_pdrv_genirq') makeUio(d);
  }
  // Other platform devices, never virtio-mmio.
  for (const other of ['serial8250', 'i8042', 'LNRO0005', 'virtio-mmio']) mkdirSync(join(devices, other));
  const writes: Array<[string, string]> = [];
  const write = (path: string, text: string): void => {
    writes.push([relative(sysfs, path), text]);
    writeFileSync(path, text);
    const file = basename(path);
    const driverName = basename(dirname(path));
    if (file === 'unbind') {
      const dev = join(devices, text);
      if (existsSync(join(dev, 'driver'))) unlinkSync(join(dev, 'driver'));
      for (const child of ['uio', `virtio${byName.get(text)?.virtioId}`]) rmSync(join(dev, child), { recursive: true, force: true });
    } else if (file === 'bind' && driverName === 'uio_pdrv_genirq') {
      const d = byName.get(text);
      if (!d) throw Object.assign(new Error('ENODEV: No such device'), { code: 'ENODEV' });
      if (readFileSync(join(devices, text, 'driver_override'), 'latin1').trim() !== 'uio_pdrv_genirq') throw Object.assign(new Error('ENODEV'), { code: 'ENODEV' });
      link(text, 'uio_pdrv_genirq');
      makeUio(d);
    }
  };
  const windows = new Map<string, MmioRegisterWindow>();
  for (const d of devs) {
    const page = new ArrayBuffer(0x200);
    const regs = new Uint32Array(page);
    regs[0] = MMIO_MAGIC;
    regs[MMIO_VERSION / 4] = 2;
    regs[MMIO_DEVICE_ID / 4] = d.virtioId;
    windows.set(d.name, MappedMmioWindow.over(page, 0));
  }
  return { root, sysfs, devDir, devices, writes, write, windows, cleanup: () => rmSync(root, { recursive: true, force: true }) };
}

/** QEMU microvm-like: an unbound virtio-fs, a disk and a vsock the kernel drives, one already on uio. */
const MICROVM: FakeDevice[] = [
  { name: 'virtio-mmio.0', regs: BASE, driver: null, virtioId: 26 },
  { name: 'virtio-mmio.1', regs: BASE + 0x200, driver: 'virtio-mmio', virtioId: 2 },
  { name: 'virtio-mmio.2', regs: BASE + 0x400, driver: 'virtio-mmio', virtioId: 19 },
  { name: 'virtio-mmio.10', regs: BASE + 0x1400, driver: 'uio_pdrv_genirq', virtioId: 4 },
  { name: 'LNRO0005:01', regs: BASE + 0x2200, driver: null, virtioId: 1 },
];

function treeOptions(tree: FakeTree): { sysfsRoot: string; devDir: string; write: (p: string, t: string) => void; mapRegisters: (d: { device: { name: string } }) => MmioRegisterWindow } {
  return { sysfsRoot: tree.sysfs, devDir: tree.devDir, write: tree.write, mapRegisters: (d) => tree.windows.get(d.device.name)! };
}

// ---- discovery

test('listVirtioMmioDevices: virtio-mmio.N and LNRO0005:NN in order, their drivers, ids only from the kernel driver', (t) => {
  const tree = fakeTree(MICROVM);
  try {
    const found = listVirtioMmioDevices(tree.sysfs);
    t.deepEqual(
      found.map((d) => [d.name, d.driver, d.virtioDeviceId]),
      [
        ['LNRO0005:01', null, null],
        ['virtio-mmio.0', null, null],
        ['virtio-mmio.1', 'virtio-mmio', 2],
        ['virtio-mmio.2', 'virtio-mmio', 19],
        ['virtio-mmio.10', 'uio_pdrv_genirq', null],
      ],
    );
    t.is(found[2]!.path, join(tree.devices, 'virtio-mmio.1'));
    writeFileSync(join(tree.devices, 'virtio-mmio.2', 'virtio19', 'device'), '19\n');
    const e = t.throws(() => listVirtioMmioDevices(tree.sysfs), { instanceOf: PlatformError });
    t.is(e?.code, 'ERR_PLATFORM_SYSFS_FORMAT');
    t.regex(e!.message, /virtio-mmio\.2\/virtio19\/device: expected "0x" and 4 hex digits \(a virtio device id\), got "19\\n"/);
    t.is(t.throws(() => listVirtioMmioDevices(join(tree.root, 'nope')), { instanceOf: PlatformError })?.code, 'ERR_PLATFORM_SYSFS');
  } finally {
    tree.cleanup();
  }
});

test('isVirtioMmioDeviceName', (t) => {
  for (const ok of ['virtio-mmio.0', 'virtio-mmio.17', 'LNRO0005:00', 'LNRO0005:1f']) t.true(isVirtioMmioDeviceName(ok), ok);
  for (const bad of ['virtio-mmio', 'virtio-mmio.', 'virtio-mmio.x', 'LNRO0005', 'LNRO0005:', 'LNRO0005:0', 'LNRO0006:00', 'serial8250', 'feb00000.virtio_mmio', '../virtio-mmio.0']) {
    t.false(isVirtioMmioDeviceName(bad), bad);
  }
});

// ---- binding

test('binding the kernel-driven vsock device: unbind, driver_override, bind, in that order; map0 read', (t) => {
  const tree = fakeTree(MICROVM);
  try {
    const vsock = listVirtioMmioDevices(tree.sysfs).find((d) => d.name === 'virtio-mmio.2')!;
    const bound = bindToUioPdrvGenirq(vsock, { ...treeOptions(tree), virtioDeviceId: 19 });
    t.deepEqual(tree.writes, [
      ['bus/platform/devices/virtio-mmio.2/driver/unbind', 'virtio-mmio.2'],
      ['bus/platform/devices/virtio-mmio.2/driver_override', 'uio_pdrv_genirq'],
      ['bus/platform/drivers/uio_pdrv_genirq/bind', 'virtio-mmio.2'],
    ]);
    t.is(readFileSync(join(tree.sysfs, 'bus/platform/drivers/virtio-mmio/unbind'), 'latin1'), 'virtio-mmio.2', 'the unbind landed in the virtio-mmio driver');
    t.is(bound.device.driver, 'uio_pdrv_genirq');
    t.is(bound.uio.devPath, join(tree.devDir, bound.uio.name));
    t.deepEqual(bound.map, { addr: BASE, size: PAGE, offset: 0x400, blockAddr: BASE + 0x400 });
    t.is(bound.name, 'virtio-mmio@0xfeb00400');
    // Idempotent: bound already, nothing more is written.
    const again = bindToUioPdrvGenirq(bound.device, { ...treeOptions(tree), virtioDeviceId: 19 });
    t.is(again.uio.name, bound.uio.name);
    t.is(tree.writes.length, 3);
  } finally {
    tree.cleanup();
  }
});

test('a device the kernel drives as another virtio device is never unbound', (t) => {
  const tree = fakeTree(MICROVM);
  try {
    const disk = listVirtioMmioDevices(tree.sysfs).find((d) => d.name === 'virtio-mmio.1')!;
    for (const opts of [{ virtioDeviceId: 19 }, {}]) {
      const e = t.throws(() => bindToUioPdrvGenirq(disk, { ...treeOptions(tree), ...opts }), { instanceOf: PlatformError });
      t.is(e?.code, 'ERR_PLATFORM_NOT_OURS');
      t.regex(e!.message, /virtio-mmio\.1 is virtio device 2, driven by the kernel's virtio-mmio driver.*left alone/);
    }
    // Claiming every id we drive leaves it alone too.
    for (const id of [19, 26]) claimVirtioMmioDevice(id, treeOptions(tree));
    t.deepEqual(tree.writes.filter(([p, text]) => p.includes('virtio-mmio.1') || text === 'virtio-mmio.1'), []);
    t.true(existsSync(join(tree.devices, 'virtio-mmio.1', 'driver')), 'still bound to virtio-mmio');
    t.is(listVirtioMmioDevices(tree.sysfs).find((d) => d.name === 'virtio-mmio.1')!.driver, 'virtio-mmio');
  } finally {
    tree.cleanup();
  }
});

test('binding fails with a clear error when uio_pdrv_genirq is not loaded or the bind is refused', (t) => {
  const noDriver = fakeTree(MICROVM, { withUioDriver: false });
  try {
    const fsdev = listVirtioMmioDevices(noDriver.sysfs).find((d) => d.name === 'virtio-mmio.0')!;
    const e = t.throws(() => bindToUioPdrvGenirq(fsdev, treeOptions(noDriver)), { instanceOf: PlatformError });
    t.is(e?.code, 'ERR_PLATFORM_BIND');
    t.regex(e!.message, /uio_pdrv_genirq does not exist: load the uio and uio_pdrv_genirq modules first/);
    t.deepEqual(noDriver.writes, []);
  } finally {
    noDriver.cleanup();
  }
  const tree = fakeTree(MICROVM);
  try {
    const fsdev = listVirtioMmioDevices(tree.sysfs).find((d) => d.name === 'virtio-mmio.0')!;
    const refusing = (path: string, text: string): void => {
      if (path.endsWith('uio_pdrv_genirq/bind')) throw Object.assign(new Error('ENODEV: No such device'), { code: 'ENODEV' });
      tree.write(path, text);
    };
    const e = t.throws(() => bindToUioPdrvGenirq(fsdev, { ...treeOptions(tree), write: refusing }), { instanceOf: PlatformError });
    t.is(e?.code, 'ERR_PLATFORM_BIND');
    t.regex(e!.message, /binding virtio-mmio\.0 to uio_pdrv_genirq: writing "virtio-mmio\.0" to .*uio_pdrv_genirq\/bind failed: ENODEV/);
  } finally {
    tree.cleanup();
  }
});

// ---- claiming by device id

test('claimVirtioMmioDevice: from the kernel, from an unbound slot, already on uio; others given back', (t) => {
  const tree = fakeTree(MICROVM);
  try {
    const opts = treeOptions(tree);
    const vsock = claimVirtioMmioDevice(19, opts);
    t.is(vsock.device.name, 'virtio-mmio.2');
    t.is(vsock.name, 'virtio-mmio@0xfeb00400');
    t.is(vsock.window, tree.windows.get('virtio-mmio.2')!);

    tree.writes.length = 0;
    const fsdev = claimVirtioMmioDevice(26, opts);
    t.is(fsdev.device.name, 'virtio-mmio.0', 'the unbound slot was probed and is the fs device');
    // LNRO0005:01 (first in order, unbound, a network device) was bound, probed, given back.
    t.deepEqual(tree.writes, [
      ['bus/platform/devices/LNRO0005:01/driver_override', 'uio_pdrv_genirq'],
      ['bus/platform/drivers/uio_pdrv_genirq/bind', 'LNRO0005:01'],
      ['bus/platform/drivers/uio_pdrv_genirq/unbind', 'LNRO0005:01'],
      ['bus/platform/devices/LNRO0005:01/driver_override', '\n'],
      ['bus/platform/devices/virtio-mmio.0/driver_override', 'uio_pdrv_genirq'],
      ['bus/platform/drivers/uio_pdrv_genirq/bind', 'virtio-mmio.0'],
    ]);
    t.is(listVirtioMmioDevices(tree.sysfs).find((d) => d.name === 'LNRO0005:01')!.driver, null);

    tree.writes.length = 0;
    t.is(claimVirtioMmioDevice(4, opts).device.name, 'virtio-mmio.10', 'already on uio: no writes');
    t.is(tree.writes.filter(([p]) => p.includes('virtio-mmio.10')).length, 0);

    const e = t.throws(() => claimVirtioMmioDevice(19, { ...opts, index: 1 }), { instanceOf: PlatformError });
    t.is(e?.code, 'ERR_PLATFORM_NO_DEVICE');
    t.regex(e!.message, /no virtio-mmio device 19 #1: 1 found among 5 virtio-mmio devices \(LNRO0005:01: unbound, .*virtio-mmio\.1: virtio-mmio device 2/);
  } finally {
    tree.cleanup();
  }
});

// ---- parsers

test('uio map0 parsers: the kernel formats, and malformed text refused naming the file', (t) => {
  t.is(parseUioMapValue('0x00000000feb00000\n', 'addr'), 0xfeb00000);
  t.is(parseUioMapValue('0x200\n', 'offset'), 0x200);
  t.is(parseUioMapValue('0x0', 'offset'), 0);
  for (const bad of ['', '\n', 'feb00000\n', '0x\n', '0xFEB00000\n', '0x12g\n', ' 0x10\n', '0x10 \n', '0x10\n\n', '0x00000000000000001\n', '-0x1\n', '0x1fffffffffffff0\n']) {
    const e = t.throws(() => parseUioMapValue(bad, '/sys/x/maps/map0/addr'), { instanceOf: PlatformError }, JSON.stringify(bad));
    t.is(e?.code, 'ERR_PLATFORM_SYSFS_FORMAT');
    t.regex(e!.message, /^\/sys\/x\/maps\/map0\/addr: /);
  }
  const texts = (addr: string, size: string, offset: string) => ({ addr: `${addr}\n`, size: `${size}\n`, offset: `${offset}\n` });
  t.deepEqual(parseUioMap(texts('0x00000000feb00000', '0x0000000000001000', '0xe00'), 'map0', 0x200), { addr: 0xfeb00000, size: 0x1000, offset: 0xe00, blockAddr: 0xfeb00e00 });
  t.deepEqual(parseUioMap(texts('0xfeb00e00', '0x1000', '0xe00'), 'map0', 0x200).addr, 0xfeb00000, 'older kernels: addr with its in-page offset');
  const refused: Array<[ReturnType<typeof texts>, RegExp]> = [
    [texts('0xfeb00e00', '0x1000', '0x200'), /map0: addr 0xfeb00e00 is not page aligned and offset 0x200 is not its offset/],
    [texts('0xfeb00000', '0x0', '0x0'), /map0\/size: 0x0 is not a whole number of 4096-byte pages/],
    [texts('0xfeb00000', '0x1200', '0x0'), /map0\/size: 0x1200/],
    [texts('0xfeb00000', '0x1000', '0xf00'), /map0\/offset: 0xf00 does not leave a 4-byte aligned block of 0x200 bytes/],
    [texts('0xfeb00000', '0x1000', '0x202'), /map0\/offset: 0x202/],
  ];
  for (const [tx, re] of refused) t.throws(() => parseUioMap(tx, 'map0', 0x200), { instanceOf: PlatformError, message: re });
  t.is(parseVirtioDeviceIdFile('0x0013\n', 'device'), 19);
  for (const bad of ['0x13\n', '0x00013\n', '19\n', '0X0013\n', '0x0013\n\n']) t.throws(() => parseVirtioDeviceIdFile(bad, 'virtio0/device'), { instanceOf: PlatformError, message: /virtio0\/device: expected/ });
});

test('a malformed map0 file of a bound device is refused naming that file', (t) => {
  const tree = fakeTree(MICROVM);
  try {
    const dev = listVirtioMmioDevices(tree.sysfs).find((d) => d.name === 'virtio-mmio.10')!;
    const bound = bindToUioPdrvGenirq(dev, treeOptions(tree));
    const sizeFile = join(bound.device.path, 'uio', bound.uio.name, 'maps', 'map0', 'size');
    writeFileSync(sizeFile, '4096\n');
    const e = t.throws(() => readUioMap0(bound.device.path, bound.uio), { instanceOf: PlatformError });
    t.is(e?.code, 'ERR_PLATFORM_SYSFS_FORMAT');
    t.true(e!.message.startsWith(`${sizeFile}: expected "0x"`), e!.message);
    rmSync(sizeFile);
    t.is(t.throws(() => readUioMap0(bound.device.path, bound.uio), { instanceOf: PlatformError })?.code, 'ERR_PLATFORM_SYSFS');
  } finally {
    tree.cleanup();
  }
});

test('random text: the platform parsers return or throw PlatformError', (t) => {
  fc.assert(
    fc.property(fc.string({ maxLength: 40 }), fc.string({ maxLength: 40 }), fc.string({ maxLength: 40 }), (a, s, o) => {
      for (const parse of [() => parseUioMapValue(a, 'f'), () => parseVirtioDeviceIdFile(a, 'f'), () => parseUioMap({ addr: a, size: s, offset: o }, 'map0', 0x200)]) {
        try {
          parse();
        } catch (e) {
          if (!(e instanceof PlatformError)) return false;
        }
      }
      return true;
    }),
    { numRuns: 3000 },
  );
  t.pass();
});

// ---- mapping (the addon's mmap of a regular file stands in for /dev/uioN)

const withAddon = addonAvailable() ? test : test.skip;

withAddon('mapMmioRegisters maps map0 and the transport drives the registers at its offset', async (t) => {
  const tree = fakeTree(MICROVM);
  try {
    const dev = listVirtioMmioDevices(tree.sysfs).find((d) => d.name === 'virtio-mmio.2')!;
    const bound = bindToUioPdrvGenirq(dev, { ...treeOptions(tree), virtioDeviceId: 19 });
    const page = Buffer.alloc(PAGE, 0xee);
    page.fill(0, 0x400, 0x600);
    page.writeUInt32LE(MMIO_MAGIC, 0x400);
    page.writeUInt32LE(2, 0x400 + MMIO_VERSION);
    page.writeUInt32LE(19, 0x400 + MMIO_DEVICE_ID);
    page.writeUInt32LE(1, 0x400 + 0x010); // DeviceFeatures: bit 0 / bit 32 (VERSION_1) in plain memory
    page.writeUInt32LE(64, 0x400 + 0x034); // QueueNumMax
    writeFileSync(bound.uio.devPath, page);
    const window = mapMmioRegisters(bound);
    const tr = MmioTransport.open({ window, dma: new DmaArena(new ArrayBuffer(1 << 16), { base: 0x10_0000 }), interrupts: null, name: bound.name });
    t.is(tr.name, 'virtio-mmio@0xfeb00400 (device 19)');
    tr.negotiate(1n << 32n);
    tr.enableQueue(0, 64, 0x10_0000, 0x10_1000, 0x10_2000);
    tr.notify(0);
    const regs = readFileSync(bound.uio.devPath);
    t.is(regs.readUInt32LE(0x400 + MMIO_STATUS), 11, 'ACKNOWLEDGE | DRIVER | FEATURES_OK');
    t.is(regs.readUInt32LE(0x400 + MMIO_QUEUE_NOTIFY), 0);
    t.is(regs.readUInt32LE(0x400 + 0x080), 0x10_0000, 'QueueDescLow');
    await tr.close();
    t.true(regs.subarray(0, 0x400).every((b) => b === 0xee) && regs.subarray(0x600).every((b) => b === 0xee), 'the neighbours in the page are untouched');
    t.is(readFileSync(bound.uio.devPath).readUInt32LE(0x400 + MMIO_STATUS), 0, 'close reset it');
    t.throws(() => mapMmioRegisters({ ...bound, uio: { ...bound.uio, devPath: join(tree.devDir, 'uio99') } }), { instanceOf: PlatformError, message: /cannot open .*uio99/ });
  } finally {
    tree.cleanup();
  }
});
