// Checks of single settings, shared by the command line (config.ts) and the config file
// (config-file.ts). Each throws a ValueError whose message says what is wrong with the
// value; the caller adds where it came from (the flag, or the file and line).
import { isIP } from 'node:net';
import { PCAP_MAX_PAYLOAD_BYTES } from './pcap-capture.js';

export class ValueError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ValueError';
  }
}

/** sun_path holds 108 bytes including the terminating NUL (Linux unix(7)). */
export const UNIX_PATH_MAX_BYTES = 107;
/** "_4294967295": the suffix of a hybrid guest-connect path. */
export const UDS_PORT_SUFFIX_MAX_BYTES = 11;
export const UDS_PATH_MAX_BYTES = UNIX_PATH_MAX_BYTES - UDS_PORT_SUFFIX_MAX_BYTES;
export const CID_MIN = 3;
export const CID_MAX = 0xfffffffe; // 0xffffffff is VMADDR_CID_ANY
export const GUEST_PORT_MAX = 0xfffffffe; // 0xffffffff is VMADDR_PORT_ANY
/** Split-ring sizes (virtio 1.2, 2.7: a power of 2, at most 32768). */
export const QUEUE_SIZE_MAX = 32768;

/** A decimal integer in [min, max], from text (command line). */
export function decimal(text: string, what: string, min: number, max: number, range = `${min}..${max}`): number {
  if (!/^\d{1,10}$/.test(text)) throw new ValueError(`${what} ${JSON.stringify(text)} is not a decimal number`);
  return inRange(Number(text), what, min, max, range);
}

/** An integer in [min, max] (config file numbers). */
export function inRange(n: number, what: string, min: number, max: number, range = `${min}..${max}`): number {
  if (!Number.isSafeInteger(n)) throw new ValueError(`${what} ${n} is not an integer`);
  if (n < min || n > max) throw new ValueError(`${what} ${n} is out of range (${range})`);
  return n;
}

export function cid(n: number, what: string): number {
  if (!Number.isSafeInteger(n)) throw new ValueError(`${what} ${n} is not an integer`);
  if (n < CID_MIN || n > CID_MAX) throw new ValueError(`${what} ${n} is reserved or out of range (${CID_MIN}..${CID_MAX}; 0, 1, 2 and 4294967295 are reserved)`);
  return n;
}

export function cidText(text: string, what: string): number {
  if (!/^\d{1,10}$/.test(text)) throw new ValueError(`${what} ${JSON.stringify(text)} is not a decimal number`);
  return cid(Number(text), what);
}

/** A Unix socket path: not empty, no NUL, at most `max` bytes. */
export function socketPath(path: string, what: string, max = UNIX_PATH_MAX_BYTES): string {
  if (path.length === 0) throw new ValueError(`${what} is empty`);
  if (path.includes('\0')) throw new ValueError(`${what} contains a NUL byte`);
  const bytes = Buffer.byteLength(path);
  if (bytes > max) throw new ValueError(`${what} is ${bytes} bytes long, more than the ${max} a Unix socket path allows here`);
  return path;
}

/** A file path (capture file): not empty, no NUL. */
export function filePath(path: string, what: string): string {
  if (path.length === 0) throw new ValueError(`${what} is empty`);
  if (path.includes('\0')) throw new ValueError(`${what} contains a NUL byte`);
  return path;
}

export interface ListenAddress {
  /** IPv4, IPv6 without brackets, or a host name. */
  host: string;
  port: number;
}

/** HOST:PORT (IPv6 as [::1]:PORT); port in [minPort, 65535]. */
export function listenAddress(text: string, what: string, portWhat = `${what} port`, minPort = 1): ListenAddress {
  let host: string;
  let portText: string;
  const bracket = /^\[([^\]]+)\]:([^:]*)$/.exec(text);
  if (bracket) {
    host = bracket[1]!;
    portText = bracket[2]!;
    if (isIP(host) !== 6) throw new ValueError(`${JSON.stringify(host)} in brackets is not an IPv6 address`);
  } else {
    const colon = text.lastIndexOf(':');
    if (colon <= 0) throw new ValueError(`${what} ${JSON.stringify(text)} is not HOST:PORT`);
    host = text.slice(0, colon);
    portText = text.slice(colon + 1);
    if (host.includes(':')) throw new ValueError(`write an IPv6 ${what} in brackets, as [${host}]:${portText}`);
    if (isIP(host) === 0 && !/^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$/.test(host)) {
      throw new ValueError(`${what} host ${JSON.stringify(host)} is not an IP address or host name`);
    }
  }
  return { host, port: decimal(portText, portWhat, minPort, 65535) };
}

/** True for addresses only this machine can reach. */
export function isLoopback(host: string): boolean {
  if (host === 'localhost' || host === '::1') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  return /^::ffff:127\./i.test(host);
}

export function queueSize(n: number, what: string): number {
  inRange(n, what, 1, QUEUE_SIZE_MAX);
  if ((n & (n - 1)) !== 0) throw new ValueError(`${what} ${n} is not a power of 2`);
  return n;
}

export function payloadCap(n: number, what: string): number {
  return inRange(n, what, 0, PCAP_MAX_PAYLOAD_BYTES);
}

/** vhost-device-vsock's groups: names joined by '+' (each 1-64 letters, digits, _ . -), duplicates dropped. */
export function groups(text: string, what: string): string[] {
  const names = text.split('+');
  for (const g of names) if (!/^[A-Za-z0-9_.-]{1,64}$/.test(g)) throw new ValueError(`${what} ${JSON.stringify(text)}: expected names joined by '+' (1-64 letters, digits, _ . -)`);
  return [...new Set(names)];
}

/** The first pair of items with equal keys (null keys ignored): [earlier index, later index], or null. */
export function firstDuplicate<T>(items: readonly T[], key: (item: T) => string | number | null): [number, number] | null {
  const seen = new Map<string | number, number>();
  for (let i = 0; i < items.length; i++) {
    const k = key(items[i]!);
    if (k === null) continue;
    const j = seen.get(k);
    if (j !== undefined) return [j, i];
    seen.set(k, i);
  }
  return null;
}
