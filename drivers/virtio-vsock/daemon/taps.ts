// Packet taps the daemon attaches to a device (device/packet-tap.ts): the debug log of
// each connection's life, and a fan-out when several taps watch one device.
import type { DescriptorChain } from '../../../kernel/virtqueue/device-queue.js';
import { VSOCK_HEADER_SIZE, VSOCK_OP_REQUEST, VSOCK_OP_RESPONSE, VSOCK_OP_RST, VSOCK_OP_SHUTDOWN, VSOCK_SHUTDOWN_RCV, VSOCK_SHUTDOWN_SEND, VsockHeader, decodeHeader, opName } from '../header.js';
import { type PacketTap, type TapDirection, TAP_GUEST_TO_HOST } from '../device/packet-tap.js';

/**
 * Logs the packets that open and close connections (REQUEST, RESPONSE, SHUTDOWN, RST)
 * with their ports, one line each; data and credit packets are not logged. Meant for
 * --log-level debug only: it formats a line per control packet.
 */
export class ConnectionLogTap implements PacketTap {
  readonly #h = new VsockHeader();
  readonly #log: (line: string) => void;

  constructor(log: (line: string) => void) {
    this.#log = log;
  }

  packet(direction: TapDirection, header: Uint8Array, _chain: DescriptorChain, _payloadBytes: number): void {
    const op = header[30]! | (header[31]! << 8);
    if (op !== VSOCK_OP_REQUEST && op !== VSOCK_OP_RESPONSE && op !== VSOCK_OP_SHUTDOWN && op !== VSOCK_OP_RST) return;
    const h = decodeHeader(new DataView(header.buffer, header.byteOffset, VSOCK_HEADER_SIZE), 0, this.#h);
    let what = opName(op);
    if (op === VSOCK_OP_SHUTDOWN) {
      const f = [(h.flags & VSOCK_SHUTDOWN_RCV) !== 0 ? 'RCV' : '', (h.flags & VSOCK_SHUTDOWN_SEND) !== 0 ? 'SEND' : ''].filter((x) => x !== '').join('|');
      what += `(${f || h.flags})`;
    }
    const way = direction === TAP_GUEST_TO_HOST ? 'guest -> host' : 'host -> guest';
    this.#log(`${way} ${what} ${h.srcCid}:${h.srcPort} -> ${h.dstCid}:${h.dstPort}`);
  }
}

/** Several taps on one device, called in order. */
export class TapFanOut implements PacketTap {
  constructor(readonly taps: readonly PacketTap[]) {}

  packet(direction: TapDirection, header: Uint8Array, chain: DescriptorChain, payloadBytes: number): void {
    for (let i = 0; i < this.taps.length; i++) this.taps[i]!.packet(direction, header, chain, payloadBytes);
  }
}

/** One tap for a list of taps: null for none, the tap itself for one. */
export function combineTaps(taps: readonly PacketTap[]): PacketTap | null {
  if (taps.length === 0) return null;
  if (taps.length === 1) return taps[0]!;
  return new TapFanOut(taps);
}
