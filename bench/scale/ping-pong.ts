// Round-trip latency through the daemon: a guest echoes on PING_PORT (raw connection),
// a host client sends `size` bytes through the hybrid socket and waits for all of them
// to come back, again and again; each round trip is one sample.
import type { Socket } from 'node:net';
import { connectHybridVsock } from '../../appliance/pingpong/hybrid-connect.js';
import type { RawVsockListener } from '../../drivers/virtio-vsock/driver/raw-listener.js';
import { PING_PORT } from './load-generator.js';
import type { SimGuest } from './sim-guest.js';

export class PingPong {
  private constructor(
    private readonly listener: RawVsockListener,
    private readonly socket: Socket,
    private readonly message: Buffer,
  ) {}

  static async open(guest: SimGuest, udsPath: string, size: number): Promise<PingPong> {
    const listener = guest.driver.listenRaw(PING_PORT, (conn) => {
      conn.setHandlers({
        onData: (c) => conn.write(c),
        onEnd: () => conn.end(),
        onDrain: () => {},
        onClose: () => {},
      });
    });
    const socket = await connectHybridVsock(udsPath, PING_PORT);
    return new PingPong(listener, socket, Buffer.alloc(size, 0x5a));
  }

  /** Round trips back to back for about `ms`; their times in microseconds. */
  run(ms: number): Promise<number[]> {
    const samples: number[] = [];
    const s = this.socket;
    const size = this.message.length;
    const until = performance.now() + ms;
    return new Promise((resolve, reject) => {
      let got = 0;
      let sentAt = 0;
      const send = (): void => {
        got = 0;
        sentAt = performance.now();
        s.write(this.message);
      };
      const onData = (c: Buffer): void => {
        got += c.length;
        if (got < size) return;
        const now = performance.now();
        samples.push((now - sentAt) * 1000);
        if (got > size) return done(new Error(`ping-pong: ${got} bytes came back for ${size}`));
        if (now >= until) return done(null);
        send();
      };
      const onClose = (): void => done(new Error('ping-pong: the connection closed'));
      const done = (err: Error | null): void => {
        s.off('data', onData);
        s.off('close', onClose);
        if (err) reject(err);
        else resolve(samples);
      };
      s.on('data', onData);
      s.once('close', onClose);
      send();
    });
  }

  close(): void {
    this.socket.destroy();
    this.listener.close();
  }
}
