// A VM thread entry for tests/vsock-daemon-vm-threads.test.ts: it comes up like
// vm-thread.ts (its log line, 'ready'), then dies of an uncaught error, as a bug in a
// VM's device would kill its thread.
import { parentPort, workerData } from 'node:worker_threads';
import type { FromVmThread, VmThreadData } from '../../drivers/virtio-vsock/daemon/vm-thread-protocol.js';

const port = parentPort!;
const data = workerData as VmThreadData;
const post = (m: FromVmThread): void => port.postMessage(m);
post({ type: 'log', line: `up: ${data.name}` });
post({ type: 'ready', forwards: [] });
setTimeout(() => {
  throw new Error(`a bug in ${data.name}`);
}, 50);
port.on('message', () => {});
