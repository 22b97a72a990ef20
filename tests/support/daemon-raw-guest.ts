// The vhost-user-vsock daemon (startDaemon) in this process with a fake vhost-user
// server: no QEMU; a test "attaches" a VM by driving its device with the raw test driver
// (same thread), as a guest driver would. For tests of the daemon's host ends, capture,
// metrics and log without booting a guest.
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DaemonConfig } from '../../drivers/virtio-vsock/daemon/config.js';
import { type DaemonDeps, type RunningDaemon, startDaemon } from '../../drivers/virtio-vsock/daemon/daemon.js';
import { RawStream, VsockRawDriver, type RawDriverOptions } from './vsock-raw-driver.js';

export interface RawGuestDaemon {
  dir: string;
  daemon: RunningDaemon;
  /** Every log line so far. */
  logs: string[];
  /** Drives VM `cid`'s device with a raw driver (made once): the VM is attached from then on. */
  attach(cid: number, opts?: RawDriverOptions): VsockRawDriver;
  /** Stops the raw driver of VM `cid` (the device is reset: the VM is detached). */
  detach(cid: number): Promise<void>;
  /** Resolves with the first log line (past or future) matching `re`. */
  waitLog(re: RegExp): Promise<string>;
  /** Stops the drivers and the daemon, removes the folder. Idempotent. */
  close(): Promise<void>;
}

/** Starts the daemon with `make(dir)` as its config (paths inside the fresh folder `dir`). */
export async function startRawGuestDaemon(prefix: string, make: (dir: string) => DaemonConfig, deps: Omit<DaemonDeps, 'createVhostUserServer' | 'log'> = {}): Promise<RawGuestDaemon> {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const logs: string[] = [];
  const waiters: Array<{ re: RegExp; resolve: (l: string) => void }> = [];
  const log = (line: string): void => {
    logs.push(line);
    for (const w of waiters.splice(0)) {
      if (w.re.test(line)) w.resolve(line);
      else waiters.push(w);
    }
  };
  let daemon: RunningDaemon;
  try {
    daemon = await startDaemon(make(dir), { ...deps, log, createVhostUserServer: async () => ({ close: async () => {} }) });
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  const drivers = new Map<number, VsockRawDriver>();
  let closed = false;
  const fx: RawGuestDaemon = {
    dir,
    daemon,
    logs,
    attach(cid, opts) {
      const device = daemon.devices.get(cid);
      if (!device) throw new Error(`no VM with CID ${cid}`);
      const had = drivers.get(cid);
      if (had) return had;
      const drv = VsockRawDriver.sameThread(device, opts);
      drivers.set(cid, drv);
      return drv;
    },
    async detach(cid) {
      const drv = drivers.get(cid);
      drivers.delete(cid);
      await drv?.close();
      daemon.devices.get(cid)?.reset();
    },
    waitLog(re) {
      const seen = logs.find((l) => re.test(l));
      if (seen !== undefined) return Promise.resolve(seen);
      return new Promise((resolve) => waiters.push({ re, resolve }));
    },
    async close() {
      if (closed) return;
      closed = true;
      for (const cid of [...drivers.keys()]) await fx.detach(cid);
      await daemon.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return fx;
}

/** A guest listener on the raw driver: accepts one host connection to guestPort. */
export async function acceptOnGuest(drv: VsockRawDriver, guestPort: number): Promise<RawStream> {
  const s = new RawStream(drv, guestPort, -1);
  await s.accept();
  return s;
}

/** The hybrid handshake's reply line ("OK <port>" or "ERR ..."), with the socket. Never times out: the daemon answers or closes. */
export function hybridConnectLine(uds: string, port: number): Promise<{ line: string; socket: Socket }> {
  return new Promise((resolve, reject) => {
    const s = connect({ path: uds, allowHalfOpen: true });
    let got = Buffer.alloc(0);
    s.on('data', (c: Buffer) => {
      got = Buffer.concat([got, c]);
      const nl = got.indexOf(0x0a);
      if (nl >= 0) {
        s.removeAllListeners('data');
        s.pause();
        const rest = got.subarray(nl + 1);
        if (rest.length > 0) s.unshift(rest);
        resolve({ line: got.toString('latin1', 0, nl), socket: s });
      }
    });
    s.once('end', () => resolve({ line: got.toString('latin1'), socket: s }));
    s.once('error', reject);
    s.write(`CONNECT ${port}\n`);
  });
}

/** Everything a socket delivers until its end, error or close. Never rejects. */
export function readToEnd(s: Socket): Promise<Buffer> {
  return new Promise((resolve) => {
    const parts: Buffer[] = [];
    const done = (): void => resolve(Buffer.concat(parts));
    s.on('data', (c: Buffer) => parts.push(c));
    s.on('end', done);
    s.on('error', done);
    s.on('close', done);
    s.resume();
  });
}
