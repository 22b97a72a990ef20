// Driver settings both guest programs use (the webserver appliance, run/guest-entry.ts,
// and the runtime that runs a user's program, runtime/launcher.ts). No imports: the
// guest bundles and the host read them alike.

/** With tx mode auto, DMA chunks below this are copied (VsockDriverOptions.autoZeroCopyMinBytes). */
export const AUTO_ZERO_COPY_MIN_BYTES = 16 * 1024;

/** A request every few ms keeps the drivers polling; an idle guest sleeps after this. */
export const DEFAULT_POLL_WINDOW_MS = 5;

/** The transmit modes of our vsock driver (drivers/virtio-vsock/driver/connection.ts TxMode). */
export const TX_MODES = ['auto', 'two-copy', 'single-copy', 'zero-copy'] as const;
