// The scale bench's fairness figures (bench/scale/fairness.ts): Jain's index, max-min
// fair shares by water-filling, and the index over throughput divided by fair share.
import test from 'ava';
import { demandNormalizedJain, jainIndex, maxMinFairShares, median, spreadOf } from '../bench/scale/fairness.js';

test("Jain's index: 1 for equal shares, 1/n when one takes everything, k/n when k share equally", (t) => {
  t.is(jainIndex([5, 5, 5, 5]), 1);
  t.is(jainIndex([8, 0, 0, 0]), 0.25);
  t.is(jainIndex([3, 3, 0, 0]), 0.5);
  t.is(jainIndex([0, 0]), 1);
  t.true(Number.isNaN(jainIndex([])));
});

test('max-min fair shares: small demands are met, the rest is split equally among the larger ones', (t) => {
  t.deepEqual(maxMinFairShares([1, 1, Infinity], 10), [1, 1, 8]);
  t.deepEqual(maxMinFairShares([Infinity, Infinity], 10), [5, 5]);
  t.deepEqual(maxMinFairShares([2, 8, 8], 12), [2, 5, 5]);
  t.deepEqual(maxMinFairShares([1, 2], 10), [1, 2]);
});

test('throughput over fair share: 1 when the flooder only takes what the others leave, lower when it takes theirs', (t) => {
  // Three paced VMs ask for 1 each and get it; the flooder gets the rest.
  t.is(demandNormalizedJain([1, 1, 1, 7], [1, 1, 1, Infinity]), 1);
  // The flooder took the paced VMs' share: they got half of what they asked.
  const starved = demandNormalizedJain([0.5, 0.5, 0.5, 8.5], [1, 1, 1, Infinity]);
  t.true(starved < 0.9, String(starved));
  // Every VM floods: raw fairness.
  t.is(demandNormalizedJain([3, 3, 3], [Infinity, Infinity, Infinity]), 1);
});

test('median and spread', (t) => {
  t.is(median([3, 1, 2]), 2);
  t.is(median([4, 1, 2, 3]), 2.5);
  t.deepEqual(spreadOf([3, 1, 2]), { min: 1, median: 2, max: 3 });
});
