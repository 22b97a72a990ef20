// The typed face of the native addon (build/Release/tsvirtio.node, sources next to
// this file). The addon only does what JavaScript cannot: mmap and friends, eventfd,
// watching an fd from the event loop, Unix sockets with fd passing (SCM_RIGHTS) and
// AF_VSOCK sockets. It holds no protocol logic.
//
// Errors: a failed system call throws an Error shaped like Node's own system errors:
// `code` is the errno name ('EBADF'), `errno` the negative errno, `syscall` the call
// ('mmap'), message 'EBADF: Bad file descriptor, mmap'. "Would block" is never an
// error: the calls that can block return -1 (or false) instead. Bad argument types
// throw TypeError (code ERR_INVALID_ARG_TYPE) or RangeError (code ERR_OUT_OF_RANGE).
//
// Every fd the addon creates is close-on-exec; sockets are created nonblocking.
//
// Loading: the addon is loaded on first use, from the path in the environment variable
// TSVIRTIO_ADDON if set (relative to the working directory), else from the first
// `build/Release/tsvirtio.node` or `tsvirtio.node` found in the folder of this module
// or any folder above it. That covers the sources (kernel/native/), the transpiled
// tree (dist/kernel/native/), a bundle in dist/bundles/, and a guest image with the
// bundle and tsvirtio.node side by side in /app/. A program started from a startup
// snapshot (kernel/guest/startup-snapshot.ts) searches from the blob's folder instead
// (/app/ in the guest, next to /app/tsvirtio.node).

import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startupSnapshotBlob } from '../guest/startup-snapshot.js';

/** A system call failure from the addon. */
export interface NativeError extends Error {
  /** The errno name, e.g. 'EBADF'. */
  code: string;
  /** The negative errno value, e.g. -9. */
  errno: number;
  /** The failed call, e.g. 'mmap', 'recvmsg'. */
  syscall: string;
}

/** Event bits for watchFd (libuv's UV_READABLE, UV_WRITABLE, UV_DISCONNECT). */
export const READABLE = 1;
export const WRITABLE = 2;
export const DISCONNECT = 4;

/** Called on the main thread (of the creating environment) when the fd is ready. */
export type WatchCallback = (err: NativeError | null, events: number) => void;

/** A uv_poll watcher on one fd. At most one watcher per fd (libuv refuses a second: EEXIST). */
export interface FdWatcher {
  /** Stops for good and releases the callback. Idempotent. Stop before closing the fd. */
  stop(): void;
  /** Stops polling but keeps the watcher; resume() starts again. */
  pause(): void;
  /** Starts polling again, for `events` if given (else the events last asked for). */
  resume(events?: number): void;
  /** Whether this watcher keeps the event loop alive while it polls (default: yes). */
  ref(): FdWatcher;
  unref(): FdWatcher;
  /** True while polling (not paused, not stopped, no poll error). */
  readonly active: boolean;
}

export interface RecvResult {
  /** Bytes read into the buffer; 0 at end of stream; -1 if nothing to read yet. */
  bytes: number;
  /** Fds received with these bytes (close-on-exec). The caller owns (must close) them. */
  fds: number[];
  /** The peer sent more fds than maxFds allowed; the kernel closed the extra ones. */
  fdsTruncated: boolean;
}

export interface VsockPeer {
  fd: number;
  cid: number;
  port: number;
}

/** Bytes the addon can read or write: an ArrayBuffer or any view (Buffer, Uint8Array, DataView...). */
export type ByteSource = ArrayBuffer | ArrayBufferView;

/** The raw addon, exactly as the C++ exports it. */
export interface TsVirtioAddon {
  // memory
  mmap(fd: number, length: number, offset: number | bigint, writable?: boolean, shared?: boolean, populate?: boolean): ArrayBuffer;
  mmapAnonymous(length: number, hugetlb?: boolean, shared?: boolean, populate?: boolean): ArrayBuffer;
  munmap(mapping: ArrayBuffer): boolean;
  mlock(buffer: ByteSource): void;
  munlock(buffer: ByteSource): void;
  mlockOnFault(address: bigint, length: number): void;
  addressOf(buffer: ByteSource): bigint;
  memfdCreate(name: string, hugetlb?: boolean): number;
  pageSize(): number;
  // eventfd and plain fds
  eventfd(initial?: number, nonblocking?: boolean): number;
  eventfdRead(fd: number): number;
  eventfdWrite(fd: number, value?: number | bigint): boolean;
  read(fd: number, buffer: ByteSource): number;
  write(fd: number, buffer: ByteSource): number;
  close(fd: number): void;
  setNonblocking(fd: number, on?: boolean): void;
  shutdown(fd: number, how: 0 | 1 | 2): void;
  checkSocketError(fd: number): void;
  // Unix sockets
  unixListen(path: string, backlog?: number): number;
  unixAccept(fd: number): number;
  unixConnect(path: string): number;
  unixSocketPair(): [number, number];
  recvMsg(fd: number, buffer: ByteSource, maxFds?: number): RecvResult;
  sendMsg(fd: number, buffer: ByteSource, fds?: readonly number[]): number;
  // vsock
  vsockSocket(): number;
  vsockBind(fd: number, cid: number, port: number): void;
  vsockListen(fd: number, backlog?: number): void;
  vsockAccept(fd: number): VsockPeer | -1;
  vsockConnect(fd: number, cid: number, port: number): boolean;
  getLocalCid(): number;
  // fd readiness
  watchFd(fd: number, callback: WatchCallback, events?: number): FdWatcher;
  // clocks
  tscNow(): bigint;
  setRealtimeClock(msSinceEpoch: number): void;
  // randomness
  reseedRandom(bytes: ByteSource): { kernel: boolean; openssl: boolean };
}

export const ADDON_NOT_BUILT_MESSAGE = 'native addon not built: run `npm ci` (or `node build.mjs`)';

/** Thrown when no tsvirtio.node can be found. */
export class AddonNotBuiltError extends Error {
  readonly code = 'ERR_TSVIRTIO_ADDON_NOT_BUILT';
  constructor(readonly searched: readonly string[]) {
    super(ADDON_NOT_BUILT_MESSAGE);
    this.name = 'AddonNotBuiltError';
  }
}

/**
 * The folder of the running program's code: this module's (ESM: the sources, dist/, an
 * ESM bundle); for a program deserialized from a startup snapshot, whose code has no file
 * of its own, the blob's; else the script bundle's (dist/bundles/appliance.cjs, where
 * build.mjs makes import.meta.url undefined). Read at first load, never at top level: in a
 * snapshot __dirname is still where the snapshot was built.
 */
function programDir(): string {
  const url: string | undefined = import.meta.url;
  if (url !== undefined) return dirname(fileURLToPath(url));
  const blob = startupSnapshotBlob();
  return blob !== null ? dirname(blob) : __dirname;
}

/** Where the addon would be loaded from, in order (the first existing file wins). */
export function addonCandidates(): string[] {
  const explicit = process.env['TSVIRTIO_ADDON'];
  if (explicit) return [resolve(explicit)]; // relative to the working directory
  const out: string[] = [];
  let dir = programDir();
  for (;;) {
    out.push(join(dir, 'build', 'Release', 'tsvirtio.node'), join(dir, 'tsvirtio.node'));
    const up = dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  return out;
}

let cached: TsVirtioAddon | undefined;

/**
 * Loads the addon (once, on first use: nothing loads it at module top level, so a program
 * importing this module can be built into a startup snapshot). Throws AddonNotBuiltError
 * if there is none.
 */
export function loadAddon(): TsVirtioAddon {
  if (cached) return cached;
  const candidates = addonCandidates();
  const path = candidates.find((p) => existsSync(p));
  if (path === undefined) throw new AddonNotBuiltError(candidates);
  try {
    // What require() does for a .node file, without node:module (not snapshot-safe in
    // Node 20) or import.meta (absent in the script bundle).
    const mod = { exports: {} };
    process.dlopen(mod, path);
    cached = mod.exports as TsVirtioAddon;
  } catch (err) {
    throw new Error(`native addon at ${path} failed to load (rebuild it: \`node build.mjs\`): ${(err as Error).message}`, { cause: err });
  }
  return cached;
}

/** True if the addon can be loaded. */
export function addonAvailable(): boolean {
  try {
    loadAddon();
    return true;
  } catch {
    return false;
  }
}

const a = (): TsVirtioAddon => cached ?? loadAddon();

// ---- memory ----------------------------------------------------------------------

export interface MmapOptions {
  /** PROT_WRITE as well as PROT_READ (default true). */
  writable?: boolean;
  /** MAP_SHARED (default true); false gives a private copy-on-write mapping. */
  shared?: boolean;
  /** MAP_POPULATE: fault all pages in now (default false). */
  populate?: boolean;
}

/**
 * Maps `length` bytes of `fd` from `offset` (a number or bigint; must be a multiple of
 * the page size). Returns an external ArrayBuffer over the mapping (at most 4 GiB, Node
 * 20's ArrayBuffer limit). The mapping goes away on munmap() or when the ArrayBuffer is
 * garbage collected. The fd may be closed right after mapping.
 */
export function mmap(fd: number, length: number, offset: number | bigint = 0, writable = true, shared = true, populate = false): ArrayBuffer {
  return a().mmap(fd, length, offset, writable, shared, populate);
}

/** mmap with an options object. */
export function mmapFd(fd: number, length: number, offset: number | bigint = 0, opts: MmapOptions = {}): ArrayBuffer {
  return a().mmap(fd, length, offset, opts.writable ?? true, opts.shared ?? true, opts.populate ?? false);
}

export interface AnonymousMapOptions {
  /** MAP_HUGETLB: back with huge pages (needs vm.nr_hugepages; ENOMEM otherwise). */
  hugetlb?: boolean;
  /** MAP_SHARED instead of MAP_PRIVATE. */
  shared?: boolean;
  /** MAP_POPULATE. */
  populate?: boolean;
}

/** Anonymous read-write memory (optionally huge pages), as an external ArrayBuffer. */
export function mmapAnonymous(length: number, opts: AnonymousMapOptions = {}): ArrayBuffer {
  return a().mmapAnonymous(length, opts.hugetlb ?? false, opts.shared ?? false, opts.populate ?? false);
}

/**
 * Unmaps an ArrayBuffer returned by mmap()/mmapAnonymous() and detaches it: afterwards its
 * byteLength is 0, every view over it has length 0 (reads give undefined, writes do
 * nothing) and DataView accesses throw. Returns true if it unmapped now, false if the
 * buffer was already unmapped (idempotent). Throws TypeError for any other ArrayBuffer.
 */
export function munmap(mapping: ArrayBuffer): boolean {
  return a().munmap(mapping);
}

/** Locks the pages under a buffer or view into RAM (mlock). */
export function mlock(buffer: ByteSource): void {
  a().mlock(buffer);
}

export function munlock(buffer: ByteSource): void {
  a().munlock(buffer);
}

/**
 * mlock2(MLOCK_ONFAULT) of `length` bytes at `address` (page aligned) of this process:
 * each page stays in RAM once touched. For file mappings only (V8's heap madvise()s its
 * pages away, which fails on locked ones).
 */
export function mlockOnFault(address: bigint, length: number): void {
  a().mlockOnFault(address, length);
}

/** The CPU's time-stamp counter (rdtsc); -1n on CPUs without one. */
export function tscNow(): bigint {
  return a().tscNow();
}

/** Sets CLOCK_REALTIME (root only): a guest restored from a saved state (kernel/guest/resume.ts). */
export function setRealtimeClock(msSinceEpoch: number): void {
  a().setRealtimeClock(msSinceEpoch);
}

/**
 * Mixes `bytes` into the kernel's random pool and reseeds its generator now, and into
 * node's OpenSSL generator when node exports RAND_seed (root only; kernel/guest/resume.ts).
 */
export function reseedRandom(bytes: ByteSource): { kernel: boolean; openssl: boolean } {
  return a().reseedRandom(bytes);
}

/** Virtual address of the first byte of an ArrayBuffer, or of a view at its byteOffset. */
export function addressOf(buffer: ByteSource): bigint {
  return a().addressOf(buffer);
}

/** memfd_create(name, MFD_CLOEXEC [| MFD_HUGETLB]) -> fd. Size it with fs.ftruncateSync. */
export function memfdCreate(name: string, opts: { hugetlb?: boolean } = {}): number {
  return a().memfdCreate(name, opts.hugetlb ?? false);
}

export function pageSize(): number {
  return a().pageSize();
}

// ---- eventfd and plain fds ---------------------------------------------------------

/** eventfd(initial, EFD_CLOEXEC [| EFD_NONBLOCK]) -> fd. Nonblocking by default. */
export function eventfd(initial = 0, nonblocking = true): number {
  return a().eventfd(initial, nonblocking);
}

/** Reads and resets the counter; -1 if it is zero (nonblocking fd). */
export function eventfdRead(fd: number): number {
  return a().eventfdRead(fd);
}

/** Adds `value` (default 1) to the counter; false if that would overflow (nonblocking fd). */
export function eventfdWrite(fd: number, value: number | bigint = 1): boolean {
  return a().eventfdWrite(fd, value);
}

/** read(2): bytes read, 0 at end of file, -1 if it would block. */
export function read(fd: number, buffer: ByteSource): number {
  return a().read(fd, buffer);
}

/** write(2): bytes written (maybe fewer), -1 if it would block. */
export function write(fd: number, buffer: ByteSource): number {
  return a().write(fd, buffer);
}

export function close(fd: number): void {
  a().close(fd);
}

export function setNonblocking(fd: number, on = true): void {
  a().setNonblocking(fd, on);
}

export const SHUT_RD = 0;
export const SHUT_WR = 1;
export const SHUT_RDWR = 2;

export function shutdown(fd: number, how: 0 | 1 | 2): void {
  a().shutdown(fd, how);
}

/** Throws the socket's pending error (SO_ERROR) as a NativeError with syscall 'connect'. */
export function checkSocketError(fd: number): void {
  a().checkSocketError(fd);
}

// ---- Unix stream sockets --------------------------------------------------------------

/** A nonblocking listening Unix stream socket bound to `path` (which must not exist). */
export function unixListen(path: string, backlog = 16): number {
  return a().unixListen(path, backlog);
}

/** A nonblocking fd for the next pending connection, or -1 if none is waiting. */
export function unixAccept(fd: number): number {
  return a().unixAccept(fd);
}

/** A nonblocking connected fd. Throws EAGAIN if the listener's backlog is full. */
export function unixConnect(path: string): number {
  return a().unixConnect(path);
}

/** A connected pair of nonblocking Unix stream sockets. */
export function unixSocketPair(): [number, number] {
  return a().unixSocketPair();
}

/**
 * recvmsg(2) into `buffer` with room for `maxFds` passed fds (MSG_CMSG_CLOEXEC).
 * On a stream socket the fds arrive with the first byte of the message that carried
 * them: read exactly a message header's worth of bytes to get that message's fds.
 */
export function recvMsg(fd: number, buffer: ByteSource, maxFds = 0): RecvResult {
  return a().recvMsg(fd, buffer, maxFds);
}

/** sendmsg(2) with SCM_RIGHTS fds (MSG_NOSIGNAL): bytes sent (maybe fewer), -1 if it would block. */
export function sendMsg(fd: number, buffer: ByteSource, fds: readonly number[] = []): number {
  return a().sendMsg(fd, buffer, fds);
}

// ---- AF_VSOCK -------------------------------------------------------------------------

export const VMADDR_CID_ANY = 0xffffffff;
export const VMADDR_CID_LOCAL = 1;
export const VMADDR_CID_HOST = 2;
export const VMADDR_PORT_ANY = 0xffffffff;

/** A nonblocking AF_VSOCK stream socket (EAFNOSUPPORT where the kernel has no vsock). */
export function vsockSocket(): number {
  return a().vsockSocket();
}

export function vsockBind(fd: number, cid: number, port: number): void {
  a().vsockBind(fd, cid, port);
}

export function vsockListen(fd: number, backlog = 16): void {
  a().vsockListen(fd, backlog);
}

/** The next connection with the peer's address, or -1 if none is waiting. */
export function vsockAccept(fd: number): VsockPeer | -1 {
  return a().vsockAccept(fd);
}

/**
 * Starts connecting: true if connected at once, false if in progress (EINPROGRESS):
 * then wait for WRITABLE and call checkSocketError(fd).
 */
export function vsockConnect(fd: number, cid: number, port: number): boolean {
  return a().vsockConnect(fd, cid, port);
}

/** The local CID (IOCTL_VM_SOCKETS_GET_LOCAL_CID on /dev/vsock). */
export function getLocalCid(): number {
  return a().getLocalCid();
}

// ---- fd readiness ---------------------------------------------------------------------

/**
 * Watches `fd` from Node's event loop (uv_poll; libuv makes the fd nonblocking).
 * `events` defaults to READABLE. The callback runs on this thread; promise jobs run
 * after it; an exception thrown by it is an uncaught exception. A stopped watcher never
 * keeps the process alive; unref() lets a running one not keep it alive either.
 */
export function watchFd(fd: number, callback: WatchCallback, events: number = READABLE): FdWatcher {
  return a().watchFd(fd, callback, events);
}
