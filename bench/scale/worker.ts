// A load process of the scale bench: a LoadGenerator driven by the coordinator over the
// IPC channel (worker-protocol.ts). Started with child_process.fork; exits when told,
// or when the coordinator goes away.
import { LoadGenerator } from './load-generator.js';
import { PingPong } from './ping-pong.js';
import type { FinishSummary, WorkerMessage, WorkerReply, WorkerRequest } from './worker-protocol.js';

const MAX_REPORTED_FAILURES = 50;

let gen = new LoadGenerator();
let ping: PingPong | null = null;
const remapTimers = new Map<number, NodeJS.Timeout>();
/** How often a 'remap-memory' guest sends its memory table again. */
const REMAP_INTERVAL_MS = 100;

async function handle(r: WorkerRequest): Promise<unknown> {
  switch (r.op) {
    case 'init':
      gen = new LoadGenerator(r.options);
      return null;
    case 'attach':
      await Promise.all(r.plans.map((p) => gen.attach(p)));
      return null;
    case 'open': {
      const failed: string[] = [];
      let opened = 0;
      await Promise.all(
        r.cids.map(async (cid) => {
          for (const c of await gen.open(cid, r.perVm)) {
            if (c.openError === null) opened++;
            else if (failed.length < MAX_REPORTED_FAILURES) failed.push(`cid ${cid} ${c.kind} #${c.id}: ${c.openError.message}`);
          }
        }),
      );
      return { opened, failed };
    }
    case 'mode':
      for (const cid of r.cids) gen.setMode(cid, r.mode);
      return null;
    case 'pacing':
      gen.setPacing(r.pacing);
      return null;
    case 'counters':
      return gen.counters();
    case 'finish': {
      const { outcomes, stuck } = await gen.finish(r.cids, r.timeoutMs);
      const failed = outcomes.filter((o) => o.opened && o.problems.length > 0);
      const good = outcomes.filter((o) => o.problems.length === 0);
      const summary: FinishSummary = {
        connections: outcomes.length + stuck.length,
        neverOpened: outcomes.filter((o) => !o.opened).length,
        ok: good.length,
        hostToGuestBytes: good.reduce((n, o) => n + o.hostToGuest.received, 0),
        guestToHostBytes: good.reduce((n, o) => n + o.guestToHost.received, 0),
        failed: failed.slice(0, MAX_REPORTED_FAILURES),
        failedCount: failed.length,
        stuck: stuck.slice(0, MAX_REPORTED_FAILURES),
        stuckCount: stuck.length,
      };
      return summary;
    }
    case 'detach':
      for (const cid of r.cids) {
        stopRemapping(cid);
        await gen.detach(cid, r.how);
      }
      return null;
    case 'drop-closed':
      return r.cids.reduce((n, cid) => n + gen.dropClosed(cid), 0);
    case 'misbehave': {
      const guest = gen.guestOf(r.cid);
      if (guest === null) throw new Error(`cid ${r.cid} is not attached`);
      const c = guest.controls;
      if (r.what === 'stop-consuming') c.setDeaf(r.on);
      else if (r.what === 'kick-storm') {
        if (r.on) c.kickInLoop(64);
        else c.stopKicking();
      } else if (r.what === 'remap-memory') {
        if (r.on && !remapTimers.has(r.cid)) remapTimers.set(r.cid, setInterval(() => c.remapMemory(), REMAP_INTERVAL_MS));
        else if (!r.on) stopRemapping(r.cid);
      } else if (r.what === 'vanish') {
        await gen.detach(r.cid, 'vanish');
      }
      return { stormKicks: c.stormKicks, remaps: c.remaps };
    }
    case 'ping-open': {
      const guest = gen.guestOf(r.cid);
      if (guest === null) throw new Error(`cid ${r.cid} is not attached`);
      ping = await PingPong.open(guest, gen.planOf(r.cid)!.udsPath, r.size);
      return null;
    }
    case 'ping':
      if (ping === null) throw new Error('no ping-pong connection (ping-open first)');
      return ping.run(r.ms);
    case 'usage': {
      const u = process.cpuUsage();
      return { cpuSeconds: (u.user + u.system) / 1e6, rssBytes: process.memoryUsage.rss() };
    }
    case 'exit':
      ping?.close();
      for (const cid of [...remapTimers.keys()]) stopRemapping(cid);
      await gen.close();
      setImmediate(() => process.exit(0));
      return null;
  }
}

function stopRemapping(cid: number): void {
  const t = remapTimers.get(cid);
  if (t) clearInterval(t);
  remapTimers.delete(cid);
}

process.on('message', (m: WorkerMessage) => {
  handle(m.request).then(
    (result) => process.send!({ seq: m.seq, ok: true, result } satisfies WorkerReply),
    (e: Error) => process.send!({ seq: m.seq, ok: false, error: e.stack ?? String(e) } satisfies WorkerReply),
  );
});
process.on('disconnect', () => process.exit(0));
