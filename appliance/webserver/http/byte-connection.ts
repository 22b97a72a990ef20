// What the webserver needs from a client connection: bytes in through handlers, writes
// out, half-close, backpressure both ways. Two implementations: DuplexByteConnection
// over any node:stream Duplex (node:net, the kernel's AF_VSOCK), and the vsock driver's
// RawVsockConnection (driver.listenRaw), which skips node:stream altogether.

export type WriteCallback = (err?: Error | null) => void;

export interface ByteConnectionHandlers {
  /** Received bytes. The chunk is the handler's: the connection never reuses it, keeping it is fine. */
  onData(chunk: Buffer): void;
  /** The peer sends no more. Our side stays open (half-open) until end() or destroy(). */
  onEnd(): void;
  /** After write() returned false (needDrain): everything written so far has completed. */
  onDrain(): void;
  /** The connection is gone (err: why, when it failed). The last call. */
  onClose(err: Error | null): void;
}

export interface ByteConnection {
  /** Where events go; set once, right after the connection is handed over. */
  setHandlers(handlers: ByteConnectionHandlers): void;
  /**
   * Sends `chunk` (kept, not copied, until cb). cb runs once the connection is done with
   * the bytes (possibly before write returns). False: wait for onDrain before more.
   */
  write(chunk: Uint8Array, cb?: WriteCallback): boolean;
  /** `chunks` as one gathered write (one packet where they fit); the array itself is not kept; cb once for all. */
  writev(chunks: readonly Uint8Array[], cb?: WriteCallback): boolean;
  /** Half-close once every write has gone out. */
  end(): void;
  /** Closes now; what was not sent is lost. */
  destroy(): void;
  /** Stops onData (input backpressure) until resume(). */
  pause(): void;
  resume(): void;
  isPaused(): boolean;
  /** write() returned false and onDrain has not come yet. */
  readonly needDrain: boolean;
  /** end() or destroy() was called, or the connection closed: writes would fail. */
  readonly writeEnded: boolean;
}
