// The FUSE reply parser of our virtio-fs driver (drivers/virtio-fs/driver, codec in
// drivers/virtio-fs/fuse-codec.ts; virtio 1.2 5.11 carries FUSE), facing a device that
// lies: the real device serves a host folder, and the input decides, reply by reply,
// whether it answers truly, flips bytes of the reply, claims another written length,
// sets a header field to a chosen value, or answers with the input's bytes. The driver
// meanwhile runs operations the input picks (stat, lstat, readFile, readFileDma, readdir,
// readlink, statfs, open/read/stat/release), on either ring layout.
//
// Invariants: every operation resolves or fails with one of the driver's errors
// (FsError for an errno the device sent, FuseCodecError naming the opcode for a reply
// that breaks FUSE, VirtioFsError, and DmaError ERR_DMA_EXHAUSTED for a file larger than
// the DMA arena); nothing else is thrown; a FuseCodecError is counted
// in stats.badReplies, which never exceeds the replies tampered with; and once the
// device answers truly again the driver works: a file and a folder never touched
// before read back exactly (the next request works).
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DmaError } from '../../kernel/memory/dma.js';
import { InProcessTransport } from '../../kernel/transport/inprocess.js';
import type { DescriptorChain } from '../../kernel/virtqueue/descriptor-chain.js';
import { TamperingFsDevice } from '../../tests/support/tampering-fs-device.js';
import { FsError, FuseCodecError, VirtioFsDriver, VirtioFsError } from '../../drivers/virtio-fs/driver/index.js';
import { ByteReader } from '../engine/byte-reader.js';
import { InvariantError, check, type FuzzTarget } from '../engine/target.js';

const WITNESS_BYTES = Buffer.from(Array.from({ length: 5000 }, (_, i) => (i * 7 + 3) & 0xff));
const PATHS = ['one.bin', 'data.bin', 'dir', 'dir/inner.txt', 'link', 'missing', '/', '', '..', 'dir/../one.bin', 'one.bin/x'];
const MAX_OPS = 12;

/** The real device, with the input choosing what happens to each reply. */
class LyingFsDevice extends TamperingFsDevice {
  readonly name = 'lying virtio-fs';
  /** Where the lies come from; null: the truth from now on. */
  lies: ByteReader | null = null;
  tampered = 0;

  constructor(root: string) {
    super(root, 'fuzz');
  }

  /** Applies the next lie to a served reply; returns the written length to report. */
  protected answer(chain: DescriptorChain, written: number): number {
    const r = this.lies;
    if (r === null || r.exhausted || chain.writableCount === 0) return written;
    const mode = r.u8() % 10;
    if (mode < 5) return written; // the truth, mostly
    this.tampered++;
    const reply = chain.segment(chain.readableCount); // out header + fixed reply
    const dv = new DataView(reply.buffer, reply.byteOffset, reply.byteLength);
    switch (mode) {
      case 5: {
        const flips = 1 + (r.u8() % 4);
        for (let i = 0; i < flips; i++) {
          const at = r.u8() % Math.max(1, Math.min(written, reply.length));
          if (at < reply.length) reply[at] = reply[at]! ^ (1 << r.u8() % 8);
        }
        return written;
      }
      case 6:
        return r.u16() % (chain.writableLength + 1);
      case 7: {
        const field = r.u8() % 3;
        if (reply.length < 16) return written;
        if (field === 0) dv.setUint32(0, r.bool() ? r.u8() : r.u32(), true);
        else if (field === 1) dv.setInt32(4, [-2, -5, -13, -22, -36, 0, 5, -600, -0x7fffffff][r.u8() % 9]!, true);
        else dv.setBigUint64(8, dv.getBigUint64(8, true) + BigInt(1 + r.u8()), true);
        return written;
      }
      default: {
        const raw = r.chunk();
        const n = chain.write(0, raw, 0, raw.length);
        return r.bool() ? n : r.u16() % (chain.writableLength + 1);
      }
    }
  }
}

let root = '';

function setup(): void {
  root = mkdtempSync(join(tmpdir(), 'fuzz-fuse-'));
  writeFileSync(join(root, 'one.bin'), 'x');
  writeFileSync(join(root, 'data.bin'), Buffer.alloc(20000, 0x5a));
  mkdirSync(join(root, 'dir'));
  writeFileSync(join(root, 'dir', 'inner.txt'), 'inner');
  symlinkSync('one.bin', join(root, 'link'));
  writeFileSync(join(root, 'witness.bin'), WITNESS_BYTES);
  mkdirSync(join(root, 'wdir'));
  writeFileSync(join(root, 'wdir', 'a'), '');
  writeFileSync(join(root, 'wdir', 'b'), '');
}

function teardown(): void {
  if (root) rmSync(root, { recursive: true, force: true });
}

/** Runs one operation; returns whether it failed with a FuseCodecError. */
async function settle(what: string, op: () => Promise<unknown>): Promise<boolean> {
  try {
    await op();
    return false;
  } catch (e) {
    // DMA memory for a file is finite: ERR_DMA_EXHAUSTED says so (readFileDma of a file larger than the arena).
    const dmaExhausted = e instanceof DmaError && e.code === 'ERR_DMA_EXHAUSTED';
    check(e instanceof FsError || e instanceof FuseCodecError || e instanceof VirtioFsError || dmaExhausted, () => `${what} failed with ${(e as Error)?.name}: ${(e as Error)?.stack ?? String(e)}`);
    check(e.message.length > 0, () => `${what} failed without a message`);
    if (e instanceof FuseCodecError) check(/^FUSE [A-Z_]+ \(unique -?\d+\): /.test(e.message) || e.opcode < 0, () => `${what}: codec error without its request: ${e.message}`);
    return e instanceof FuseCodecError;
  }
}

async function run(input: Uint8Array): Promise<void> {
  const r = new ByteReader(input);
  const ring = r.bool() ? 'packed' : 'split';
  const dev = new LyingFsDevice(root);
  dev.lies = r;
  const transport = InProcessTransport.sameThread(dev, { memoryBytes: 2 << 20 });
  // Small READs and a small pool: files of a few chunks take the multi-READ and large-file paths.
  const options = { ring, chunkSize: 16 * 1024, chunkCount: 8, queueSize: 32 } as const;
  let vfs: VirtioFsDriver | null = null;
  try {
    let codecErrors = 0;
    try {
      vfs = await VirtioFsDriver.start(transport, options);
    } catch (e) {
      check(e instanceof FuseCodecError || e instanceof VirtioFsError || e instanceof FsError, () => `start failed with ${(e as Error)?.name}: ${(e as Error)?.stack}`);
      dev.lies = null;
      vfs = await VirtioFsDriver.start(transport, options);
    }
    const v = vfs;
    for (let i = 0; i < MAX_OPS && !r.exhausted; i++) {
      const path = r.pick(PATHS);
      const kind = r.u8() % 9;
      let bad = false;
      switch (kind) {
        case 0:
          bad = await settle(`stat ${path}`, () => v.stat(path));
          break;
        case 1:
          bad = await settle(`lstat ${path}`, () => v.lstat(path));
          break;
        case 2:
          bad = await settle(`readFile ${path}`, () => v.readFile(path));
          break;
        case 3:
          bad = await settle(`readdir ${path}`, () => v.readdir(path, { withFileTypes: r.bool() }));
          break;
        case 4:
          bad = await settle(`readlink ${path}`, () => v.readlink(path));
          break;
        case 5:
          bad = await settle('statfs', () => v.statfs());
          break;
        case 8:
          bad = await settle(`readFileDma ${path}`, async () => (await v.readFileDma(path)).release());
          break;
        default:
          bad = await settle(`open/read ${path}`, async () => {
            const h = await v.open(path);
            try {
              const buf = new Uint8Array(1 + r.u16() % 8192);
              const n = await v.readAt(h, buf, 0, buf.length, r.u16());
              check(Number.isInteger(n) && n >= 0 && n <= buf.length, () => `readAt returned ${n} for ${buf.length} bytes`);
              await v.statHandle(h);
            } finally {
              await v.releaseHandle(h);
            }
          });
      }
      if (bad) codecErrors++;
    }
    const badReplies = v.stats.badReplies;
    check(codecErrors === 0 || badReplies > 0, () => `${codecErrors} operations failed on bad replies, stats.badReplies is 0`);
    check(badReplies <= dev.tampered, () => `stats.badReplies ${badReplies}, but only ${dev.tampered} replies were tampered with`);
    // The truth from now on: the driver must work.
    dev.lies = null;
    const st = await v.stat('witness.bin');
    check(st.size === WITNESS_BYTES.length && st.isFile(), () => `witness stat: size ${st.size}`);
    const content = await v.readFile('witness.bin');
    check(Buffer.isBuffer(content) && content.equals(WITNESS_BYTES), () => 'witness.bin did not read back exactly');
    const names = (await v.readdir('wdir')) as string[];
    check(names.slice().sort().join() === 'a,b', () => `witness readdir: ${JSON.stringify(names)}`);
  } catch (e) {
    if (e instanceof InvariantError) throw e;
    throw new InvariantError(`the driver failed with the device telling the truth: ${(e as Error)?.stack ?? String(e)}`);
  } finally {
    await vfs?.close();
    await transport.close();
  }
}

export const fuseReplyTarget: FuzzTarget = {
  name: 'fuse-reply',
  description: 'the virtio-fs driver\'s FUSE reply parsing, against a device that tampers with replies',
  focus: ['drivers/virtio-fs/fuse-codec.ts', 'drivers/virtio-fs/driver/virtio-fs-driver.ts', 'drivers/virtio-fs/driver/fuse-channel.ts', 'drivers/virtio-fs/driver/file-handle.ts', 'drivers/virtio-fs/driver/inode-cache.ts'],
  maxInputBytes: 1024,
  hangSeconds: 30,
  seeds() {
    return [
      new Uint8Array([0, 0, 0, 0, 0, 0, 0, 0, 0]),
      new Uint8Array([0, 0, 0, 1, 0, 5, 2, 0, 1, 0, 0, 0, 2, 0, 3, 7, 0, 6, 0x10, 0, 0, 0]),
      new Uint8Array([1, 0, 0, 0, 0, 2, 0, 0, 6, 8, 0, 0, 3, 0, 0, 7, 1, 2, 0, 0, 0]),
      new Uint8Array([0, 8, 4, 1, 2, 3, 4, 1, 0, 0, 4, 7, 0, 0, 0, 0]),
    ];
  },
  setup,
  run,
  teardown,
};
