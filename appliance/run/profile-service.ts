// A CPU-profiling service for the guest (guest flag --profile-port=N): a client connects,
// sends "<milliseconds>\n", and gets back V8's CPU profile (the .cpuprofile JSON that
// Chrome DevTools and speedscope open) of the guest's node over that window, then EOF.
// Used by `npm run bench -- profile` to see where the guest's time goes under load.
// node:inspector is imported when a profile is taken, not at top level: the guest program
// may be built into a V8 startup snapshot, for which Node 20 has not vetted it.
import type { Session } from 'node:inspector';
import type { Duplex } from 'node:stream';

const MAX_WINDOW_MS = 10 * 60 * 1000;
const MAX_LINE_BYTES = 32;

type Closable = { close(): Promise<void> | void };
type Listen = (port: number, onSocket: (s: Duplex) => void) => Promise<Closable> | Closable;

function post<T>(session: Session, method: string, params?: object): Promise<T> {
  return new Promise((resolve, reject) => {
    session.post(method, params ?? {}, (err, result) => (err ? reject(err) : resolve(result as T)));
  });
}

/** Profiles this process for `ms` milliseconds; resolves the profile as JSON text. */
export async function profileFor(ms: number, samplingIntervalUs = 1000): Promise<string> {
  const { Session } = await import('node:inspector');
  const session = new Session();
  session.connect();
  try {
    await post(session, 'Profiler.enable');
    await post(session, 'Profiler.setSamplingInterval', { interval: samplingIntervalUs });
    await post(session, 'Profiler.start');
    await new Promise((r) => setTimeout(r, ms));
    const { profile } = await post<{ profile: unknown }>(session, 'Profiler.stop');
    return JSON.stringify(profile);
  } finally {
    session.disconnect();
  }
}

/** Parses the request line; throws saying what is wrong. */
export function parseProfileRequest(line: string): number {
  if (!/^\d{1,9}$/.test(line)) throw new Error(`expected "<milliseconds>\\n", got ${JSON.stringify(line.slice(0, MAX_LINE_BYTES))}`);
  const ms = Number(line);
  if (ms < 1 || ms > MAX_WINDOW_MS) throw new Error(`window ${ms} ms is outside 1..${MAX_WINDOW_MS}`);
  return ms;
}

export async function runProfileService(listen: Listen, port: number, log: (line: string) => void): Promise<Closable> {
  let busy = false;
  return listen(port, (socket) => {
    let buf = '';
    const onData = (chunk: Buffer): void => {
      buf += chunk.toString('latin1');
      const nl = buf.indexOf('\n');
      if (nl < 0) {
        if (buf.length > MAX_LINE_BYTES) fail(`request line longer than ${MAX_LINE_BYTES} bytes`);
        return;
      }
      socket.off('data', onData);
      let ms: number;
      try {
        ms = parseProfileRequest(buf.slice(0, nl).trim());
      } catch (err) {
        return fail((err as Error).message);
      }
      if (busy) return fail('a profile is already being taken');
      busy = true;
      profileFor(ms)
        .then((json) => socket.end(json))
        .catch((err: Error) => fail(`profiler: ${err.message}`))
        .finally(() => (busy = false));
    };
    const fail = (msg: string): void => {
      log(`profile service: ${msg}`);
      socket.end(`ERR ${msg}\n`);
    };
    socket.on('data', onData);
    socket.on('error', () => {
      // the client went away: nothing to keep
    });
  });
}
