// Counters of a host end (hybrid Unix socket, TCP forward): host clients accepted,
// joined to a guest connection, or refused, by reason.

/** Why a host client got no guest connection. */
export const HOST_REFUSAL_REASONS = [
  'notAttached', // no VM attached (no front end, or its driver has not started the device): refused at once
  'badRequest', // hybrid: not "CONNECT <port>\n", too long, or none in time
  'guestRefused', // the guest answered RST (nothing listens on that guest port)
  'guestTimeout', // no answer from the guest within the connect timeout
  'error', // any other failure (device reset meanwhile, no local port...)
] as const;

export type HostRefusalReason = (typeof HOST_REFUSAL_REASONS)[number];

export interface HostEndStats {
  /** Host clients accepted on the listening socket. */
  accepted: number;
  /** Host clients joined to a guest connection. */
  connected: number;
  refused: Record<HostRefusalReason, number>;
  /** Hybrid only: guest connections to host ports (routed to <uds-path>_<port>). */
  guestConnects: number;
  /** Hybrid only: guest connections refused (nothing listening at <uds-path>_<port>). */
  guestConnectsRefused: number;
}

export function makeHostEndStats(): HostEndStats {
  const refused = {} as Record<HostRefusalReason, number>;
  for (const r of HOST_REFUSAL_REASONS) refused[r] = 0;
  return { accepted: 0, connected: 0, refused, guestConnects: 0, guestConnectsRefused: 0 };
}

/** The refusal reason of a failed device.host.connect(). */
export function refusalOf(e: { code?: string }): HostRefusalReason {
  if (e.code === 'ECONNREFUSED') return 'guestRefused';
  if (e.code === 'ETIMEDOUT') return 'guestTimeout';
  return 'error';
}

/** Log levels the host ends use; the daemon maps them onto its own. */
export type HostLogLevel = 'debug' | 'info' | 'warn' | 'error';
export type HostLog = (message: string, level?: HostLogLevel) => void;
