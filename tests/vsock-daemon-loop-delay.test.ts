// The daemon's event-loop delay histogram (daemon/event-loop-delay.ts): each recorded
// delay lands in the first bucket whose bound it does not exceed, the rest above every
// bound; the exposition is cumulative.
import test from 'ava';
import { EVENT_LOOP_DELAY_BUCKETS_SECONDS, EventLoopDelaySampler } from '../drivers/virtio-vsock/daemon/event-loop-delay.js';
import { loopFigures, renderMetrics } from '../drivers/virtio-vsock/daemon/metrics.js';

test('delays are counted in their bucket, bounds inclusive; +Inf takes the rest; rendered cumulative', (t) => {
  const s = new EventLoopDelaySampler();
  for (const d of [0, 0.001, 0.0011, 0.05, 3]) s.record(d);
  const counts = Array.from(s.counts);
  t.is(counts[0], 2); // 0 and exactly 1 ms
  t.is(counts[1], 1); // 1.1 ms: (1, 2] ms
  t.is(counts[EVENT_LOOP_DELAY_BUCKETS_SECONDS.indexOf(0.05)], 1);
  t.is(counts.at(-1), 1); // 3 s: above 2 s
  t.is(s.samples, 5);
  t.true(Math.abs(s.sumSeconds - 3.0521) < 1e-9);
  const text = renderMetrics([], [], null, [loopFigures('main', s)]);
  t.regex(text, /^# TYPE nodejs_eventloop_delay_seconds histogram$/m);
  t.regex(text, /^nodejs_eventloop_delay_seconds_bucket\{le="0.001"\} 2$/m);
  t.regex(text, /^nodejs_eventloop_delay_seconds_bucket\{le="0.002"\} 3$/m);
  t.regex(text, /^nodejs_eventloop_delay_seconds_bucket\{le="2"\} 4$/m);
  t.regex(text, /^nodejs_eventloop_delay_seconds_bucket\{le="\+Inf"\} 5$/m);
  t.regex(text, /^nodejs_eventloop_delay_seconds_count 5$/m);
});

test('the sampler records while started and stops', async (t) => {
  const s = new EventLoopDelaySampler();
  s.start();
  // Keep the process alive while the sampler's unref'd timer runs: wait for a few samples.
  while (s.samples < 3) await new Promise((r) => setTimeout(r, 10));
  s.stop();
  const n = s.samples;
  await new Promise((r) => setTimeout(r, 100));
  t.is(s.samples, n);
});
