// The virtio-mmio transport (virtio 1.2, 4.2) against a register-level device model
// (tests/support/mmio-device-model.ts): the vsock driver and an echo queue run over it
// unchanged; every hostile device is refused with a stable code and a message naming
// the device and the register, without hanging; the guest window over a mapped page
// makes only 32-bit aligned register accesses and config accesses of the field's width;
// 64-bit values split into low/high halves and back.
import test, { type ExecutionContext } from 'ava';
import fc from 'fast-check';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { VirtioFsDevice } from '../drivers/virtio-fs/device/virtio-fs-device.js';
import { VirtioFsDriver } from '../drivers/virtio-fs/driver/index.js';
import { VsockDevice } from '../drivers/virtio-vsock/device/vsock-device.js';
import { VsockDriver } from '../drivers/virtio-vsock/index.js';
import { DmaArena } from '../kernel/memory/dma.js';
import { MmioTransport, VirtioMmioError } from '../kernel/transport/mmio.js';
import type { VirtioMmioErrorCode } from '../kernel/transport/mmio-errors.js';
import * as reg from '../kernel/transport/mmio-registers.js';
import { MappedMmioWindow, type MmioWindowViews, joinAddress, joinFeatures, mmioWindowViews, splitAddress, splitFeatures } from '../kernel/transport/mmio-registers.js';
import { setupDriverQueue } from '../kernel/transport/queue-setup.js';
import type { DeviceContext, VirtioDeviceModel } from '../kernel/transport/virtio-device.js';
import { STATUS_ACKNOWLEDGE, STATUS_DRIVER, STATUS_DRIVER_OK, STATUS_FAILED, STATUS_FEATURES_OK } from '../kernel/transport/virtio-transport.js';
import { VIRTIO_F_EVENT_IDX, VIRTIO_F_VERSION_1, featureBit } from '../kernel/virtqueue/layout.js';
import { EchoDevice } from './support/echo-device.js';
import { MmioDeviceModel, type MmioDeviceModelOptions, ModelIrq } from './support/mmio-device-model.js';
import { until } from './support/event-turns.js';

const WHERE = 'virtio-mmio@0xfeb00000';
const V1 = featureBit(VIRTIO_F_VERSION_1);

function openOver(model: MmioDeviceModel, irq = true): MmioTransport {
  return MmioTransport.open({ window: model, dma: model.dma, interrupts: irq ? new ModelIrq(model) : null, name: WHERE });
}

function echoModel(opts: MmioDeviceModelOptions = {}): MmioDeviceModel {
  return new MmioDeviceModel(new EchoDevice(), { memoryBytes: 1 << 20, ...opts });
}

/** Resolves when cond() holds, checking once per turn of the event loop (no clock). */
function readAll(s: Duplex): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    s.on('data', (d: Buffer) => parts.push(d));
    s.once('end', () => resolve(Buffer.concat(parts)));
    s.once('error', reject);
  });
}

// ---- drivers over the transport

test('the vsock driver runs over virtio-mmio: connect, data both ways, close', async (t) => {
  const device = new VsockDevice({ guestCid: 42 });
  const model = new MmioDeviceModel(device, { memoryBytes: 32 << 20 });
  const tr = openOver(model);
  t.is(tr.kind, 'mmio');
  t.is(tr.deviceId, 19);
  t.is(tr.name, `${WHERE} (device 19)`);
  const driver = await VsockDriver.start(tr, { connectTimeoutMs: 300_000 });
  t.is(driver.localCid, 42, 'guest_cid read from Config through 32-bit accesses');
  t.is(tr.status(), STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
  const listener = device.host.listen(5000, (s) => {
    s.on('error', () => {});
    s.pipe(s);
  });
  try {
    // Guest -> host -> guest: an echo.
    const sock = driver.connect({ cid: 2, port: 5000 });
    await new Promise<void>((resolve, reject) => sock.once('connect', resolve).once('error', reject));
    const sent = randomBytes(300_000);
    const back = readAll(sock);
    const closed = new Promise((resolve) => sock.once('close', resolve));
    sock.end(sent);
    t.true((await back).equals(sent), 'echoed bytes equal what was sent');
    await closed;

    // Host -> guest server: each side sends its own bytes.
    const toHost = randomBytes(100_000);
    const toGuest = randomBytes(70_000);
    let guestGot: Promise<Buffer> | null = null;
    const server = driver.createServer((s) => {
      guestGot = readAll(s);
      s.end(toHost);
    });
    await new Promise<void>((resolve) => server.listen(6000, resolve));
    const host = await device.host.connect(6000, { timeoutMs: 300_000 });
    const hostGot = readAll(host);
    host.end(toGuest);
    t.true((await hostGot).equals(toHost));
    await until(() => guestGot !== null, 'the guest accepted');
    t.true((await guestGot!).equals(toGuest));
    await new Promise<void>((resolve) => server.close(() => resolve()));
  } finally {
    listener.close();
    driver.close();
    await tr.close();
  }
  t.true(tr.interruptCount > 0, 'interrupts were delivered and acknowledged');
  t.is(model.irqLevel, false, 'InterruptACK lowered the line');
  t.true((model.writes.get(reg.MMIO_QUEUE_NOTIFY) ?? 0) > 0, 'doorbells went through QueueNotify');
  t.deepEqual(model.guestErrors, [], 'no access a real device would log as a guest error');
  t.is(model.deviceStatus, 0, 'close reset the device');
  t.true(model.closed, 'close released the window');
});

test('the virtio-fs driver runs over virtio-mmio: the mount tag from Config, a listing, a file read intact', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'mmio-virtiofs-'));
  const content = randomBytes(200_000);
  writeFileSync(join(root, 'page.html'), content);
  writeFileSync(join(root, 'small.txt'), 'hello over mmio\n');
  const model = new MmioDeviceModel(new VirtioFsDevice({ root, tag: 'mmiofs' }), { memoryBytes: 32 << 20 });
  const tr = openOver(model);
  let driver: VirtioFsDriver | null = null;
  try {
    t.is(tr.deviceId, 26);
    driver = await VirtioFsDriver.start(tr);
    t.is(driver.tag, 'mmiofs', 'the 40-byte config read through Config');
    t.deepEqual(((await driver.readdir('/')) as string[]).sort(), ['page.html', 'small.txt']);
    const got = await driver.readFile('/page.html');
    t.is(createHash('sha256').update(got).digest('hex'), createHash('sha256').update(content).digest('hex'));
    t.is((await driver.readFile('/small.txt')).toString(), 'hello over mmio\n');
  } finally {
    await driver?.close();
    await tr.close();
    rmSync(root, { recursive: true, force: true });
  }
  t.true(tr.interruptCount > 0);
  t.deepEqual(model.guestErrors, []);
});

test('an echo queue over virtio-mmio: requests come back, used->idx progress is visible', async (t) => {
  const model = echoModel();
  const tr = openOver(model);
  try {
    tr.negotiate(V1 | featureBit(VIRTIO_F_EVENT_IDX));
    t.is(tr.queueMaxSize(0), 256);
    t.is(tr.queueMaxSize(1), 0);
    const q = setupDriverQueue<number>(tr, 0, 'echo', 16, true);
    tr.driverOk();
    const req = tr.dma.allocate(16 * 8);
    const resp = tr.dma.allocate(16 * 8);
    const got = new Map<number, number>();
    tr.onInterrupt(() => {
      do q.drainUsed((token, len) => got.set(token, len));
      while (q.enableInterrupts());
    });
    const progress0 = tr.usedProgress();
    for (let i = 0; i < 8; i++) {
      req.fill(i + 1, i * 16, i * 16 + 16);
      q.chainBegin();
      q.chainAdd(tr.dma.addressOf(req) + i * 16, 16, false);
      q.chainAdd(tr.dma.addressOf(resp) + i * 16, 16, true);
      q.chainCommit(i);
    }
    if (q.publish()) tr.notify(0);
    await until(() => got.size === 8, 'eight echoes');
    for (let i = 0; i < 8; i++) {
      t.is(got.get(i), 16);
      t.true(resp.subarray(i * 16, i * 16 + 16).every((b) => b === i + 1));
    }
    t.is(tr.usedProgress() - progress0, 8, 'used->idx advanced by 8');
    t.true(tr.interruptCount >= 1);
    t.is(tr.lastInterruptStatus & 1, 1, 'InterruptStatus bit 0: used buffers');
  } finally {
    await tr.close();
  }
  t.deepEqual(model.guestErrors, []);
});

// ---- hostile devices

function refuses(t: ExecutionContext, fn: () => unknown, code: VirtioMmioErrorCode, message: RegExp): void {
  const e = t.throws(fn, { instanceOf: VirtioMmioError });
  t.is(e?.code, code);
  t.regex(e?.message ?? '', message);
  t.true(e?.message.startsWith(WHERE), `names the device: ${e?.message}`);
}

test('open refuses a wrong MagicValue, a legacy or unknown Version and an empty slot', (t) => {
  refuses(t, () => openOver(echoModel({ magic: 0x12345678 })), 'ERR_VIRTIO_MMIO_DEVICE', /MagicValue \(0x000\) reads 0x12345678, expected 0x74726976/);
  refuses(t, () => openOver(echoModel({ version: 1 })), 'ERR_VIRTIO_MMIO_DEVICE', /Version \(0x004\) reads 1: a legacy virtio-mmio device.*-global virtio-mmio\.force-legacy=false/);
  refuses(t, () => openOver(echoModel({ version: 3 })), 'ERR_VIRTIO_MMIO_DEVICE', /Version \(0x004\) reads 3, expected 2/);
  const empty = echoModel({ deviceId: 0 });
  refuses(t, () => openOver(empty), 'ERR_VIRTIO_MMIO_DEVICE', /DeviceID \(0x008\) reads 0: empty virtio-mmio slot/);
  t.is(empty.writes.size, 0, 'no register written behind an empty slot (4.2.3.1.1)');
  t.deepEqual([...empty.reads.keys()], [0x000, 0x004, 0x008], 'only MagicValue, Version and DeviceID read');
});

test('a reset that never completes is refused after a bounded poll', (t) => {
  const model = echoModel({ resetCompletes: false });
  const tr = openOver(model, false); // Status starts at 0, so the first reset completes
  refuses(t, () => tr.reset(), 'ERR_VIRTIO_MMIO_DEVICE', /^virtio-mmio@0xfeb00000 \(device 65520\): Status \(0x070\) still reads 0x3 after writing 0 \(reset\) and 1000000 reads/);
});

test('feature negotiation: FEATURES_OK that does not stick, features not offered, VERSION_1 missing', (t) => {
  const sticky = echoModel({ featuresOkSticks: false });
  const tr = openOver(sticky, false);
  refuses(t, () => tr.negotiate(V1), 'ERR_VIRTIO_MMIO_FEATURES', /did not accept features 0x100000000: FEATURES_OK is clear in Status \(0x070\)/);
  t.is(sticky.deviceStatus & STATUS_FAILED, STATUS_FAILED, 'FAILED set');

  const tr2 = openOver(echoModel(), false);
  refuses(t, () => tr2.negotiate(V1 | (1n << 40n)), 'ERR_VIRTIO_MMIO_FEATURES', /features 0x10000000000 that DeviceFeatures \(0x010\) does not offer/);
  tr2.reset();
  refuses(t, () => tr2.negotiate(featureBit(VIRTIO_F_EVENT_IDX)), 'ERR_VIRTIO_MMIO_FEATURES', /VIRTIO_F_VERSION_1 must be accepted \(DriverFeatures \(0x020\)\)/);
});

test('the vsock driver fails cleanly on a device that refuses FEATURES_OK', async (t) => {
  const model = new MmioDeviceModel(new VsockDevice({ guestCid: 3 }), { featuresOkSticks: false });
  const tr = openOver(model);
  await t.throwsAsync(VsockDriver.start(tr), { instanceOf: VirtioMmioError, code: 'ERR_VIRTIO_MMIO_FEATURES' });
  await tr.close();
});

test('queue set-up refuses a missing queue, bad sizes and addresses, and a queue that does not become ready', (t) => {
  const addrs = [0x1_4000_0000, 0x1_4000_1000, 0x1_4000_2000] as const;
  const noQueues = openOver(echoModel({ queueNumMax: () => 0 }), false);
  noQueues.negotiate(V1);
  t.is(noQueues.queueMaxSize(0), 0);
  refuses(t, () => noQueues.enableQueue(0, 16, ...addrs), 'ERR_VIRTIO_MMIO_QUEUE', /no queue 0: QueueNumMax \(0x034\) reads 0/);

  const tr = openOver(echoModel({ queueNumMax: () => 64 }), false);
  tr.negotiate(V1);
  refuses(t, () => tr.enableQueue(0, 0, ...addrs), 'ERR_VIRTIO_MMIO_QUEUE', /queue 0 QueueNum \(0x038\): size 0 is not a power of two/);
  refuses(t, () => tr.enableQueue(0, 48, ...addrs), 'ERR_VIRTIO_MMIO_QUEUE', /queue 0 QueueNum \(0x038\): size 48 is not a power of two/);
  refuses(t, () => tr.enableQueue(0, 128, ...addrs), 'ERR_VIRTIO_MMIO_QUEUE', /queue 0 size 128 exceeds QueueNumMax \(0x034\) 64/);
  refuses(t, () => tr.enableQueue(0, 16, -4096, addrs[1], addrs[2]), 'ERR_VIRTIO_MMIO_QUEUE', /descriptor table address -4096 \(QueueDescLow \(0x080\)\)/);
  refuses(t, () => tr.enableQueue(0, 16, addrs[0], 0.5, addrs[2]), 'ERR_VIRTIO_MMIO_QUEUE', /driver area address 0.5 \(QueueDriverLow \(0x090\)\)/);
  refuses(t, () => tr.enableQueue(0, 16, addrs[0], addrs[1], 2 ** 60), 'ERR_VIRTIO_MMIO_QUEUE', /device area address .* \(QueueDeviceLow \(0x0a0\)\)/);
  refuses(t, () => tr.notify(0), 'ERR_VIRTIO_MMIO_QUEUE', /QueueNotify \(0x050\) of queue 0, which is not enabled/);
  tr.enableQueue(0, 16, ...addrs);
  refuses(t, () => tr.enableQueue(0, 16, ...addrs), 'ERR_VIRTIO_MMIO_QUEUE', /queue 0 is already in use: QueueReady \(0x044\) reads 1 before setup/);

  const rejecting = echoModel({ rejectQueueNum: (n) => n !== 256 });
  const tr3 = openOver(rejecting, false);
  tr3.negotiate(V1);
  refuses(t, () => tr3.enableQueue(0, 64, ...addrs), 'ERR_VIRTIO_MMIO_QUEUE', /queue 0 did not become ready: QueueReady \(0x044\) reads 0 after writing 1 \(QueueNum \(0x038\) 64\)/);
  t.is(rejecting.deviceStatus & STATUS_FAILED, STATUS_FAILED);

  const tr4 = openOver(echoModel({ queueReadySticks: false }), false);
  tr4.negotiate(V1);
  refuses(t, () => tr4.enableQueue(0, 256, ...addrs), 'ERR_VIRTIO_MMIO_QUEUE', /queue 0 did not become ready: QueueReady \(0x044\) reads 0/);
});

test('config reads: a ConfigGeneration that never settles, reads outside Config, a closed transport', async (t) => {
  const churn = new MmioDeviceModel(new VsockDevice({ guestCid: 3 }), { configGenerationChurns: true });
  const tr = openOver(churn, false);
  refuses(t, () => tr.readConfig(0, 8), 'ERR_VIRTIO_MMIO_CONFIG', /ConfigGeneration \(0x0fc\) changed during each of 100 config reads/);

  const tr2 = openOver(new MmioDeviceModel(new VsockDevice({ guestCid: 0x0102_0304 })), false);
  t.deepEqual([...tr2.readConfig(0, 8)], [4, 3, 2, 1, 0, 0, 0, 0]);
  t.deepEqual([...tr2.readConfig(1, 3)], [3, 2, 1], 'unaligned reads by byte and u16');
  refuses(t, () => tr2.readConfig(250, 8), 'ERR_VIRTIO_MMIO_CONFIG', /outside the 256-byte configuration space \(Config \(0x100\)\)/);
  await tr2.close();
  refuses(t, () => tr2.readConfig(0, 8), 'ERR_VIRTIO_MMIO_CLOSED', /transport is closed/);
  refuses(t, () => tr2.deviceFeatures(), 'ERR_VIRTIO_MMIO_CLOSED', /transport is closed/);
});

// ---- register-width discipline of the guest window

type Access = { view: 8 | 16 | 32; byte: number; write: boolean };

/** Views whose every element access is logged (what MappedMmioWindow does to the page). */
function loggedViews(buffer: ArrayBuffer, byteOffset: number, log: Access[]): MmioWindowViews {
  const v = mmioWindowViews(buffer, byteOffset);
  const wrap = <T extends Uint8Array | Uint16Array | Uint32Array>(arr: T, bits: 8 | 16 | 32): T =>
    new Proxy(arr, {
      get(target, prop) {
        if (typeof prop === 'string' && /^\d+$/.test(prop)) log.push({ view: bits, byte: (Number(prop) * bits) / 8, write: false });
        const value = Reflect.get(target, prop, target);
        return typeof value === 'function' ? value.bind(target) : value;
      },
      set(target, prop, value) {
        if (typeof prop === 'string' && /^\d+$/.test(prop)) log.push({ view: bits, byte: (Number(prop) * bits) / 8, write: true });
        return Reflect.set(target, prop, value, target);
      },
    });
  return { u8: wrap(v.u8, 8), u16: wrap(v.u16, 16), u32: wrap(v.u32, 32) };
}

test('the guest window reaches control registers only as aligned 32-bit accesses, Config by field width, nothing outside its 0x200 bytes', async (t) => {
  // A page shared with neighbours: our window at 0x200, sentinel bytes everywhere else.
  const page = new ArrayBuffer(4096);
  const bytes = new Uint8Array(page);
  bytes.fill(0xa5);
  const regs = new Uint32Array(page, 0x200, reg.MMIO_WINDOW_BYTES / 4);
  regs.fill(0);
  regs[0] = reg.MMIO_MAGIC;
  regs[reg.MMIO_VERSION / 4] = 2;
  regs[reg.MMIO_DEVICE_ID / 4] = 19;
  regs[reg.MMIO_DEVICE_FEATURES / 4] = 0x20000001; // both halves read the same in plain memory: VERSION_1 in the high one
  regs[reg.MMIO_QUEUE_NUM_MAX / 4] = 128;
  regs[reg.MMIO_INTERRUPT_STATUS / 4] = 3;
  new DataView(page).setBigUint64(0x200 + reg.MMIO_CONFIG, 0x0000_0000_0000_0007n, true);
  const log: Access[] = [];
  let unmapped = 0;
  const window = new MappedMmioWindow(loggedViews(page, 0x200, log), () => unmapped++);
  const dma = new DmaArena(new ArrayBuffer(1 << 16), { base: 0x2_0000_0000 });
  const tr = MmioTransport.open({ window, dma, interrupts: null, name: 'virtio-mmio@0xfeb00200' });
  t.is(tr.deviceFeatures(), 0x20000001_20000001n);
  tr.negotiate(V1 | 1n);
  t.is(tr.queueMaxSize(2), 128);
  tr.enableQueue(2, 64, 0x2_0000_1000, 0x2_0000_2040, 0x3_0000_3000);
  tr.driverOk();
  tr.notify(2);
  t.deepEqual([...tr.readConfig(0, 8)], [7, 0, 0, 0, 0, 0, 0, 0]);
  tr.readConfig(1, 5); // u8 at 1, u16 at 2, u16 at 4
  t.true(tr.acknowledgeInterrupt());
  await tr.close();
  t.is(unmapped, 1, 'close released the mapping once');

  const control = log.filter((a) => a.byte < reg.MMIO_CONFIG);
  const config = log.filter((a) => a.byte >= reg.MMIO_CONFIG);
  t.true(control.length > 20);
  t.deepEqual(control.filter((a) => a.view !== 32 || a.byte % 4 !== 0), [], 'control registers: 32-bit aligned only');
  t.deepEqual(
    config.map((a) => [a.view, a.byte - reg.MMIO_CONFIG]),
    [[32, 0], [32, 4], [8, 1], [16, 2], [16, 4]],
    'Config: two u32 for the le64, then by width for the unaligned read',
  );
  t.true(log.every((a) => !(a.write && a.byte >= reg.MMIO_CONFIG)), 'Config never written');
  const at = (off: number): number => regs[off / 4]!;
  t.is(at(reg.MMIO_QUEUE_NUM), 64);
  t.is(joinAddress(at(reg.MMIO_QUEUE_DESC_LOW), at(reg.MMIO_QUEUE_DESC_HIGH)), 0x2_0000_1000);
  t.is(joinAddress(at(reg.MMIO_QUEUE_DRIVER_LOW), at(reg.MMIO_QUEUE_DRIVER_HIGH)), 0x2_0000_2040);
  t.is(joinAddress(at(reg.MMIO_QUEUE_DEVICE_LOW), at(reg.MMIO_QUEUE_DEVICE_HIGH)), 0x3_0000_3000);
  t.is(at(reg.MMIO_QUEUE_READY), 1);
  t.is(at(reg.MMIO_QUEUE_NOTIFY), 2, 'QueueNotify holds the queue index');
  t.is(at(reg.MMIO_INTERRUPT_ACK), 3, 'InterruptACK got the bits InterruptStatus showed');
  t.is(at(reg.MMIO_DRIVER_FEATURES), 1, 'DriverFeatures holds the high half last (VERSION_1)');
  t.is(at(reg.MMIO_STATUS), 0, 'close wrote 0 to Status');
  t.true(bytes.subarray(0, 0x200).every((b) => b === 0xa5) && bytes.subarray(0x400).every((b) => b === 0xa5), 'neighbouring devices untouched');
});

test('the guest window refuses a misplaced window and off-register offsets', (t) => {
  const page = new ArrayBuffer(4096);
  t.is(t.throws(() => MappedMmioWindow.over(page, 0xf00), { instanceOf: VirtioMmioError })?.code, 'ERR_VIRTIO_MMIO_WINDOW');
  t.is(t.throws(() => MappedMmioWindow.over(page, 0x202), { instanceOf: VirtioMmioError })?.code, 'ERR_VIRTIO_MMIO_WINDOW');
  const w = MappedMmioWindow.over(page, 0xe00);
  for (const bad of [0x002, 0x100, -4, 0.5]) t.throws(() => w.read32(bad), { instanceOf: VirtioMmioError, message: /not a 32-bit aligned control register/ });
  t.throws(() => w.write32(0x051, 1), { instanceOf: VirtioMmioError });
  t.throws(() => w.readConfig16(3), { instanceOf: VirtioMmioError, message: /16-bit configuration access at offset 3/ });
  t.throws(() => w.readConfig32(0xfe), { instanceOf: VirtioMmioError });
  t.is(w.readConfig8(0xff), 0);
});

// ---- 64-bit values in two halves

test('property: 64-bit features and addresses split into low/high u32 and join back', (t) => {
  fc.assert(
    fc.property(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), (f) => {
      const [lo, hi] = splitFeatures(f);
      return Number.isInteger(lo) && Number.isInteger(hi) && lo >= 0 && hi >= 0 && lo < 2 ** 32 && hi < 2 ** 32 && joinFeatures(lo, hi) === f && BigInt(lo) === (f & 0xffffffffn);
    }),
    { numRuns: 5000 },
  );
  fc.assert(
    fc.property(fc.maxSafeNat(), (a) => {
      const [lo, hi] = splitAddress(a);
      return lo >= 0 && hi >= 0 && lo < 2 ** 32 && hi < 2 ** 21 && joinAddress(lo, hi) === a && lo === a % 2 ** 32;
    }),
    { numRuns: 5000 },
  );
  t.deepEqual(splitAddress(0x1_0000_0000), [0, 1]);
  t.deepEqual(splitFeatures(1n << 32n), [0, 1]);
});

/** A device model that offers arbitrary features and records what was accepted. */
class FeatureProbe implements VirtioDeviceModel {
  readonly name = 'feature probe';
  readonly deviceId = 0x1234;
  readonly numQueues = 1;
  readonly maxQueueSize = 16;
  accepted: bigint | null = null;
  constructor(readonly features: bigint) {}
  config(): Uint8Array {
    return new Uint8Array(4);
  }
  activate(_ctx: DeviceContext, features: bigint): void {
    this.accepted = features;
  }
  queueReady(): void {}
  queueStopped(): void {}
  kick(): void {}
  reset(): void {
    this.accepted = null;
  }
}

test('property: features reach the device intact through the selector registers, ring addresses through the halves', (t) => {
  fc.assert(
    fc.property(
      fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
      fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
      fc.array(fc.integer({ min: 0, max: 2 ** 40 }), { minLength: 3, maxLength: 3 }),
      (offeredBits, mask, pages) => {
        const offered = offeredBits | V1;
        const probe = new FeatureProbe(offered);
        const model = new MmioDeviceModel(probe, { memoryBytes: 1 << 16 });
        const tr = openOver(model, false);
        if (tr.deviceFeatures() !== offered) return false;
        const accept = (offered & mask) | V1;
        tr.negotiate(accept);
        if (probe.accepted !== accept) return false;
        // Addresses: any 16-byte aligned values below 2^52 land as low/high halves (the
        // memory-backed window shows what was written).
        const page = new ArrayBuffer(reg.MMIO_WINDOW_BYTES);
        const regs = new Uint32Array(page);
        regs[0] = reg.MMIO_MAGIC;
        regs[reg.MMIO_VERSION / 4] = 2;
        regs[reg.MMIO_DEVICE_ID / 4] = 1;
        regs[reg.MMIO_QUEUE_NUM_MAX / 4] = 8;
        const plain = MmioTransport.open({ window: MappedMmioWindow.over(page, 0), dma: model.dma, interrupts: null, name: WHERE });
        const [d, a, u] = pages.map((p) => p * 4096) as [number, number, number];
        plain.enableQueue(0, 8, d, a, u);
        return (
          joinAddress(regs[reg.MMIO_QUEUE_DESC_LOW / 4]!, regs[reg.MMIO_QUEUE_DESC_HIGH / 4]!) === d &&
          joinAddress(regs[reg.MMIO_QUEUE_DRIVER_LOW / 4]!, regs[reg.MMIO_QUEUE_DRIVER_HIGH / 4]!) === a &&
          joinAddress(regs[reg.MMIO_QUEUE_DEVICE_LOW / 4]!, regs[reg.MMIO_QUEUE_DEVICE_HIGH / 4]!) === u
        );
      },
    ),
    { numRuns: 300 },
  );
  t.pass();
});
