// A VM thread of the daemon (worker_threads entry; threaded-daemon.ts starts it): runs
// startDaemon for its share of the VMs (vm-threads.ts) on an event loop of its own, with
// the real vhost-user servers, host ends and capture files, and answers the main thread:
// its log lines, its metrics when asked, and a close.
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { type RunningDaemon, startDaemon } from './daemon.js';
import { EventLoopDelaySampler } from './event-loop-delay.js';
import { loopFigures, plainCaptureMetrics, plainVmMetrics } from './metrics.js';
import type { FromVmThread, ToVmThread, VmThreadData } from './vm-thread-protocol.js';

if (isMainThread || parentPort === null) throw new Error('vm-thread.js is a worker thread entry (threaded-daemon.ts starts it)');
const port = parentPort;
const data = workerData as VmThreadData;
const post = (m: FromVmThread): void => port.postMessage(m);

async function run(): Promise<void> {
  let daemon: RunningDaemon;
  try {
    daemon = await startDaemon(data.config, {
      log: (line) => post({ type: 'log', line }),
      ...(data.frontEndEvents ? { onFrontEnd: (cid, event) => post({ type: 'front-end', cid, event }) } : {}),
    });
  } catch (e) {
    // Said as a message, not thrown: an uncaught error would race it to the main thread
    // with a less telling text. With the port closed the thread then ends.
    const err = e as NodeJS.ErrnoException;
    post({ type: 'failed', message: err.message, ...(err.code !== undefined ? { code: err.code } : {}) });
    port.close();
    return;
  }
  const sampler = data.sampleLoop ? new EventLoopDelaySampler() : null;
  sampler?.start();
  port.on('message', (m: ToVmThread) => {
    if (m.op === 'metrics') {
      const { vms, captures } = daemon.metricsSources();
      post({ type: 'metrics', id: m.id, vms: vms.map(plainVmMetrics), captures: captures.map(plainCaptureMetrics), loop: loopFigures(data.name, sampler) });
    } else if (m.op === 'close') {
      sampler?.stop();
      void daemon.close().then(() => port.close());
    }
  });
  post({
    type: 'ready',
    forwards: daemon.forwards.map((f) => {
      const a = f.address();
      return { address: a?.address ?? '', port: a?.port ?? 0 };
    }),
  });
}

void run();
