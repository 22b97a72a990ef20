// Command line of the vhost-user-vsock daemon: parsing and validation into a
// DaemonConfig. Every refusal is a CliUsageError naming the flag and the reason (the
// CLI prints it and exits with status 2).
import { isIP } from 'node:net';

export interface VmConfig {
  /** The guest's CID (3 .. 4294967294). */
  guestCid: number;
  /** Unix socket where QEMU connects (vhost-user). */
  socketPath: string;
  /** Hybrid vsock Unix socket (Firecracker convention), or null for none. */
  udsPath: string | null;
}

export interface ForwardConfig {
  /** Host address to listen on (IPv4, IPv6 without brackets, or a host name). */
  listenHost: string;
  listenPort: number;
  guestCid: number;
  guestPort: number;
}

export interface DaemonConfig {
  vms: VmConfig[];
  forwards: ForwardConfig[];
}

export type ParsedArgs = { help: true } | { help: false; config: DaemonConfig };

export class CliUsageError extends Error {
  readonly code = 'ERR_VSOCK_CLI_USAGE';
  constructor(
    /** The flag at fault ("--vm", "--forward", or the unknown argument). */
    readonly flag: string,
    message: string,
  ) {
    super(message);
    this.name = 'CliUsageError';
  }
}

/** sun_path holds 108 bytes including the terminating NUL (Linux unix(7)). */
export const UNIX_PATH_MAX_BYTES = 107;
/** "_4294967295": the suffix of a hybrid guest-connect path. */
const UDS_PORT_SUFFIX_MAX_BYTES = 11;
const CID_MIN = 3;
const CID_MAX = 0xfffffffe; // 0xffffffff is VMADDR_CID_ANY
const GUEST_PORT_MAX = 0xfffffffe; // 0xffffffff is VMADDR_PORT_ANY

export const HELP_TEXT = `Usage: vhost-user-vsock --vm guest-cid=CID,socket=PATH[,uds-path=PATH] [--vm ...] [--forward ...]

A virtio-vsock device for QEMU guests, served over vhost-user (QEMU:
-chardev socket,id=c0,path=PATH -device vhost-user-vsock-pci,chardev=c0, with guest
RAM shared: -object memory-backend-memfd,id=mem,size=...,share=on -machine memory-backend=mem).

Options:
  --vm guest-cid=CID,socket=PATH[,uds-path=PATH]
        One guest (repeatable, at least one).
          guest-cid  the guest's vsock CID, ${CID_MIN}..${CID_MAX}, unique per daemon.
          socket     Unix socket path where QEMU connects (vhost-user back end).
          uds-path   optional hybrid vsock socket (Firecracker convention): a host
                     program connects to PATH, writes "CONNECT <port>\\n", gets
                     "OK <host_port>\\n" and then a byte stream to that guest port; a
                     guest connecting to host CID 2, port P reaches the Unix socket
                     listening at PATH_P (RST when nothing listens there).
        Paths must be at most ${UNIX_PATH_MAX_BYTES} bytes (uds-path: ${UNIX_PATH_MAX_BYTES - UDS_PORT_SUFFIX_MAX_BYTES}, to leave room for _P).
  --forward HOST:PORT=CID:GUEST_PORT
        Listen on TCP HOST:PORT (IPv6 as [::1]:PORT) and forward each connection to
        the guest CID's vsock port GUEST_PORT (repeatable). CID must be one of the
        --vm guests. Half-close is passed on both ways.
  --help, -h
        Print this text and exit.

Flags take their value as the next argument or after "=" (--vm=guest-cid=3,...).
Bad flags are reported with the flag and the reason; the exit status is then 2.
`;

const VM_KEYS = ['guest-cid', 'socket', 'uds-path'] as const;

function parseCid(text: string, flag: string, what: string): number {
  if (!/^\d{1,10}$/.test(text)) throw new CliUsageError(flag, `${flag}: ${what} ${JSON.stringify(text)} is not a decimal number`);
  const n = Number(text);
  if (n < CID_MIN || n > CID_MAX) {
    throw new CliUsageError(flag, `${flag}: ${what} ${n} is reserved or out of range (${CID_MIN}..${CID_MAX}; 0, 1, 2 and 4294967295 are reserved)`);
  }
  return n;
}

function checkPath(path: string, flag: string, key: string, max: number): void {
  if (path.length === 0) throw new CliUsageError(flag, `${flag}: ${key} is empty`);
  if (path.includes('\0')) throw new CliUsageError(flag, `${flag}: ${key} contains a NUL byte`);
  const bytes = Buffer.byteLength(path);
  if (bytes > max) throw new CliUsageError(flag, `${flag}: ${key} is ${bytes} bytes long, more than the ${max} a Unix socket path allows here`);
}

export function parseVm(value: string): VmConfig {
  const flag = '--vm';
  if (value.trim() === '') throw new CliUsageError(flag, `${flag}: empty value (expected guest-cid=CID,socket=PATH[,uds-path=PATH])`);
  const seen = new Map<string, string>();
  for (const part of value.split(',')) {
    const eq = part.indexOf('=');
    if (eq <= 0) throw new CliUsageError(flag, `${flag}: ${JSON.stringify(part)} is not key=value (keys: ${VM_KEYS.join(', ')})`);
    const key = part.slice(0, eq);
    const v = part.slice(eq + 1);
    if (!(VM_KEYS as readonly string[]).includes(key)) throw new CliUsageError(flag, `${flag}: unknown key ${JSON.stringify(key)} (keys: ${VM_KEYS.join(', ')})`);
    if (seen.has(key)) throw new CliUsageError(flag, `${flag}: ${key} given twice`);
    seen.set(key, v);
  }
  const cid = seen.get('guest-cid');
  if (cid === undefined) throw new CliUsageError(flag, `${flag}: guest-cid is missing`);
  const socketPath = seen.get('socket');
  if (socketPath === undefined) throw new CliUsageError(flag, `${flag}: socket is missing`);
  const guestCid = parseCid(cid, flag, 'guest-cid');
  checkPath(socketPath, flag, 'socket', UNIX_PATH_MAX_BYTES);
  const udsPath = seen.get('uds-path') ?? null;
  if (udsPath !== null) checkPath(udsPath, flag, 'uds-path', UNIX_PATH_MAX_BYTES - UDS_PORT_SUFFIX_MAX_BYTES);
  if (udsPath !== null && udsPath === socketPath) throw new CliUsageError(flag, `${flag}: socket and uds-path are the same path`);
  return { guestCid, socketPath, udsPath };
}

function parsePort(text: string, flag: string, what: string, min: number, max: number): number {
  if (!/^\d{1,10}$/.test(text)) throw new CliUsageError(flag, `${flag}: ${what} ${JSON.stringify(text)} is not a decimal number`);
  const n = Number(text);
  if (n < min || n > max) throw new CliUsageError(flag, `${flag}: ${what} ${n} is out of range (${min}..${max})`);
  return n;
}

export function parseForward(value: string): ForwardConfig {
  const flag = '--forward';
  const eq = value.lastIndexOf('=');
  if (eq < 0) throw new CliUsageError(flag, `${flag}: ${JSON.stringify(value)} is not HOST:PORT=CID:GUEST_PORT`);
  const listen = value.slice(0, eq);
  const target = value.slice(eq + 1);
  let host: string;
  let portText: string;
  const bracket = /^\[([^\]]+)\]:([^:]*)$/.exec(listen);
  if (bracket) {
    host = bracket[1]!;
    portText = bracket[2]!;
    if (isIP(host) !== 6) throw new CliUsageError(flag, `${flag}: ${JSON.stringify(host)} in brackets is not an IPv6 address`);
  } else {
    const colon = listen.lastIndexOf(':');
    if (colon <= 0) throw new CliUsageError(flag, `${flag}: listen address ${JSON.stringify(listen)} is not HOST:PORT`);
    host = listen.slice(0, colon);
    portText = listen.slice(colon + 1);
    if (host.includes(':')) throw new CliUsageError(flag, `${flag}: write an IPv6 listen address in brackets, as [${host}]:${portText}`);
    if (isIP(host) === 0 && !/^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$/.test(host)) {
      throw new CliUsageError(flag, `${flag}: listen host ${JSON.stringify(host)} is not an IP address or host name`);
    }
  }
  const listenPort = parsePort(portText, flag, 'listen port', 1, 65535);
  const m = /^([^:]*):([^:]*)$/.exec(target);
  if (!m) throw new CliUsageError(flag, `${flag}: target ${JSON.stringify(target)} is not CID:GUEST_PORT`);
  const guestCid = parseCid(m[1]!, flag, 'guest CID');
  const guestPort = parsePort(m[2]!, flag, 'guest port', 0, GUEST_PORT_MAX);
  return { listenHost: host, listenPort, guestCid, guestPort };
}

/** Parses argv (without node and script). Throws CliUsageError. */
export function parseArgs(argv: readonly string[]): ParsedArgs {
  const vms: VmConfig[] = [];
  const forwards: ForwardConfig[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--help' || arg === '-h') return { help: true };
    const eq = arg.indexOf('=');
    const name = arg.startsWith('--') && eq > 0 ? arg.slice(0, eq) : arg;
    if (name !== '--vm' && name !== '--forward') {
      if (arg.startsWith('-')) throw new CliUsageError(name, `${name}: unknown flag (see --help)`);
      throw new CliUsageError(arg, `${JSON.stringify(arg)}: unexpected argument (flags are --vm, --forward, --help)`);
    }
    let value: string;
    if (name !== arg) value = arg.slice(eq + 1);
    else {
      const next = argv[i + 1];
      if (next === undefined || next.startsWith('--')) throw new CliUsageError(name, `${name}: missing value`);
      value = next;
      i++;
    }
    if (name === '--vm') vms.push(parseVm(value));
    else forwards.push(parseForward(value));
  }
  if (vms.length === 0) throw new CliUsageError('--vm', '--vm: at least one --vm is required');
  const cids = new Set<number>();
  const paths = new Set<string>();
  for (const vm of vms) {
    if (cids.has(vm.guestCid)) throw new CliUsageError('--vm', `--vm: guest-cid ${vm.guestCid} is used by two --vm`);
    cids.add(vm.guestCid);
    for (const p of [vm.socketPath, vm.udsPath]) {
      if (p === null) continue;
      if (paths.has(p)) throw new CliUsageError('--vm', `--vm: path ${p} is used twice`);
      paths.add(p);
    }
  }
  const listens = new Set<string>();
  for (const f of forwards) {
    if (!cids.has(f.guestCid)) throw new CliUsageError('--forward', `--forward: guest CID ${f.guestCid} is not declared by any --vm`);
    const key = `${f.listenHost}|${f.listenPort}`;
    if (listens.has(key)) throw new CliUsageError('--forward', `--forward: ${f.listenHost}:${f.listenPort} is forwarded twice`);
    listens.add(key);
  }
  return { help: false, config: { vms, forwards } };
}
