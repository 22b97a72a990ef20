// A minimal vhost-user front-end (the QEMU side), for tests and diagnostics: sends
// requests with fds and reads replies. With `ackEveryRequest` (after REPLY_ACK was
// negotiated) every request without a reply of its own carries NEED_REPLY and waits for
// the back-end's ack, so a caller knows each message was applied (vhost-user.rst
// "REPLY_ACK").
import { UnixFdSocket } from '../native/fd-watch.js';
import { closeFds } from './framing.js';
import {
  type MemoryRegionDescription,
  decodeHeader,
  encodeConfig,
  encodeMemTable,
  encodeMessage,
  encodeU64,
  encodeVringAddr,
  encodeVringFile,
  encodeVringState,
} from './codec.js';
import { CONFIG_HEADER_SIZE, FLAG_NEED_REPLY, FLAG_REPLY, HEADER_SIZE, Request, VERSION, requestName } from './protocol.js';

export interface Reply {
  request: number;
  flags: number;
  payload: Buffer;
}

export class FrontendError extends Error {
  constructor(
    message: string,
    readonly code: 'ERR_FRONTEND_NO_REPLY' | 'ERR_FRONTEND_BAD_REPLY' | 'ERR_FRONTEND_NACK',
  ) {
    super(message);
    this.name = 'FrontendError';
  }
}

export class VhostUserFrontend {
  readonly socket: UnixFdSocket;
  /** Set NEED_REPLY on requests without a reply and wait for the ack. */
  ackEveryRequest = false;

  constructor(socket: UnixFdSocket) {
    this.socket = socket;
  }

  static connect(path: string): VhostUserFrontend {
    return new VhostUserFrontend(UnixFdSocket.connect(path));
  }

  /** Sends raw bytes (for malformed-message tests). */
  sendRaw(bytes: Uint8Array, fds: readonly number[] = []): void {
    this.socket.send(bytes, fds);
  }

  /** Sends one request; flags default to version 1. */
  send(request: number, payload?: Uint8Array, fds: readonly number[] = [], flags = VERSION): void {
    this.socket.send(encodeMessage(request, flags, payload), fds);
  }

  /** Reads one reply; rejects if the stream ends first. */
  async readReply(): Promise<Reply> {
    const head = await this.socket.readExactly(HEADER_SIZE, 0);
    if (head === null) throw new FrontendError('the back-end closed the connection instead of replying', 'ERR_FRONTEND_NO_REPLY');
    const h = decodeHeader(head.data);
    if ((h.flags & FLAG_REPLY) === 0) throw new FrontendError(`${requestName(h.request)}: reply without the REPLY flag`, 'ERR_FRONTEND_BAD_REPLY');
    let payload: Buffer = Buffer.alloc(0);
    if (h.size > 0) {
      const body = await this.socket.readExactly(h.size, 0);
      if (body === null) throw new FrontendError(`${requestName(h.request)}: reply payload missing`, 'ERR_FRONTEND_NO_REPLY');
      closeFds(body.fds);
      payload = body.data;
    }
    closeFds(head.fds);
    return { request: h.request, flags: h.flags, payload };
  }

  /** Sends a request that has a reply of its own and returns the reply payload. */
  async call(request: number, payload?: Uint8Array): Promise<Buffer> {
    this.send(request, payload);
    const r = await this.readReply();
    if (r.request !== request) throw new FrontendError(`reply to ${requestName(r.request)} while waiting for ${requestName(request)}`, 'ERR_FRONTEND_BAD_REPLY');
    return r.payload;
  }

  /** Sends a request without a reply of its own; with ackEveryRequest waits for the ack. */
  async post(request: number, payload?: Uint8Array, fds: readonly number[] = []): Promise<void> {
    if (!this.ackEveryRequest) {
      this.send(request, payload, fds);
      return;
    }
    this.send(request, payload, fds, VERSION | FLAG_NEED_REPLY);
    const r = await this.readReply();
    if (r.request !== request) throw new FrontendError(`ack for ${requestName(r.request)} while waiting for ${requestName(request)}`, 'ERR_FRONTEND_BAD_REPLY');
    if (r.payload.length !== 8) throw new FrontendError(`${requestName(request)}: ack of ${r.payload.length} bytes`, 'ERR_FRONTEND_BAD_REPLY');
    const status = r.payload.readBigUInt64LE(0);
    if (status !== 0n) throw new FrontendError(`${requestName(request)}: the back-end answered ${status} (failure)`, 'ERR_FRONTEND_NACK');
  }

  async getFeatures(): Promise<bigint> {
    return (await this.call(Request.GET_FEATURES)).readBigUInt64LE(0);
  }
  setFeatures(features: bigint): Promise<void> {
    return this.post(Request.SET_FEATURES, encodeU64(features));
  }
  async getProtocolFeatures(): Promise<bigint> {
    return (await this.call(Request.GET_PROTOCOL_FEATURES)).readBigUInt64LE(0);
  }
  setProtocolFeatures(features: bigint): Promise<void> {
    return this.post(Request.SET_PROTOCOL_FEATURES, encodeU64(features));
  }
  async getQueueNum(): Promise<number> {
    return Number((await this.call(Request.GET_QUEUE_NUM)).readBigUInt64LE(0));
  }
  setOwner(): Promise<void> {
    return this.post(Request.SET_OWNER);
  }
  setMemTable(regions: readonly MemoryRegionDescription[], fds: readonly number[]): Promise<void> {
    return this.post(Request.SET_MEM_TABLE, encodeMemTable(regions), fds);
  }
  setVringNum(index: number, num: number): Promise<void> {
    return this.post(Request.SET_VRING_NUM, encodeVringState(index, num));
  }
  setVringAddr(index: number, desc: number, used: number, avail: number): Promise<void> {
    return this.post(Request.SET_VRING_ADDR, encodeVringAddr({ index, desc, used, avail }));
  }
  setVringBase(index: number, base: number): Promise<void> {
    return this.post(Request.SET_VRING_BASE, encodeVringState(index, base));
  }
  async getVringBase(index: number): Promise<number> {
    const p = await this.call(Request.GET_VRING_BASE, encodeVringState(index, 0));
    return p.readUInt32LE(4);
  }
  /** fd -1: the no-fd flag (polling). */
  setVringKick(index: number, fd: number): Promise<void> {
    return this.post(Request.SET_VRING_KICK, encodeVringFile(index, fd < 0), fd < 0 ? [] : [fd]);
  }
  setVringCall(index: number, fd: number): Promise<void> {
    return this.post(Request.SET_VRING_CALL, encodeVringFile(index, fd < 0), fd < 0 ? [] : [fd]);
  }
  setVringEnable(index: number, enable: boolean): Promise<void> {
    return this.post(Request.SET_VRING_ENABLE, encodeVringState(index, enable ? 1 : 0));
  }
  /** The config bytes [offset, offset + size); empty if the back-end refused. */
  async getConfig(offset: number, size: number): Promise<Buffer> {
    const p = await this.call(Request.GET_CONFIG, encodeConfig(offset, 0, new Uint8Array(size)));
    return p.length === 0 ? p : p.subarray(CONFIG_HEADER_SIZE);
  }

  close(): void {
    this.socket.close();
  }
}
