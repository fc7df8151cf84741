"""The WordPiece learner's frequency threshold for a vocabulary size: probes in pairs, run side by side.

The learner (`bert_tf.text.wordpiece_learner`, tf-text's algorithm) is run at a frequency threshold T and gives a
vocabulary whose size falls as T rises. The threshold wanted is one whose vocabulary lands in
[vocab_size, vocab_size * (1 + slack)] (its least frequent pieces are dropped later), else the largest one whose
vocabulary still holds vocab_size. Each run costs ~0.1 s on a few MB, most of a small corpus's learning time, so:

* The sizes are predicted before any run: every vocabulary holds the reserved tokens and the characters, and the
  rest is a slowly varying share of the learner's first-round size (the words and word remainders seen >= T
  times, read off its sorted round-1 counts in microseconds). On the bench's English prose that share is
  0.33-0.38 from T=2 to T=32 (0.47 at T=128), cased or uncased; on Chinese reviews, where the characters are
  most of the vocabulary, 0.22 at T=2 falling to 0.03. The share is taken from the runs made so far
  (interpolated in log T between the nearest runs on either side), or PRIOR_SHARE before the first.
* Thresholds are probed two at a time, the predicted crossing and its neighbour above, because an answer below
  the slack needs both neighbours; with two or more CPUs the second runs in a forked process (where TensorFlow is
  not imported), so a round costs one run's time. The pairs chosen do not depend on whether they run side by
  side, so the vocabulary is the same either way.
"""

import bisect
import concurrent.futures
import math
import multiprocessing
import time

from bert_tf.text.wordpiece_learner import JOINER

# Share of the learner's round-1 size in its vocabulary (after the fixed tokens), before any run: English prose
# at T=4-8, cased and uncased (0.34-0.37).
PRIOR_SHARE = 0.35

# The learner and the characters seen inside words, for the forked probe process (set before it is forked).
_CHILD_STATE = None


def learn_at(learner, threshold, inner_chars):
    """The learner's vocabulary at one frequency threshold, without the ##c pieces it makes for characters
    never seen inside a word (CJK ideographs, punctuation: no word uses them)."""
    tokens = learner.learn(threshold)
    return [t for t in tokens if not (len(t) == len(JOINER) + 1 and t.startswith(JOINER)
                                      and t[-1] not in inner_chars)]


class SizeModel:
    """Predicted vocabulary size at any threshold: the tokens every run has (reserved tokens, characters), plus
    the learner's round-1 size times the share measured by runs."""

    def __init__(self, learner, inner_chars):
        self._counts = sorted(learner.first_round_counts())
        self._fixed = len({*learner.reserved_tokens, *learner.chars,
                           *(JOINER + c for c in learner.chars if c in inner_chars)})
        self.shares = {}  # threshold -> (size - fixed) / round-1 size, from runs

    def first_round_size(self, threshold):
        return len(self._counts) - bisect.bisect_left(self._counts, threshold)

    def record(self, threshold, size):
        self.shares[threshold] = (size - self._fixed) / max(1, self.first_round_size(threshold))

    def share(self, threshold):
        below = max((t for t in self.shares if t <= threshold), default=None)
        above = min((t for t in self.shares if t >= threshold), default=None)
        if below is None or above is None or below == above:
            known = below if below is not None else above
            return PRIOR_SHARE if known is None else self.shares[known]
        frac = (math.log(threshold) - math.log(below)) / (math.log(above) - math.log(below))
        return self.shares[below] + frac * (self.shares[above] - self.shares[below])

    def predict(self, threshold):
        return self._fixed + self.share(threshold) * self.first_round_size(threshold)

    def crossing(self, size, lo, hi):
        """The largest threshold in [lo, hi] predicted to give at least `size` tokens (lo if none)."""
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.predict(mid) >= size:
                lo = mid
            else:
                hi = mid - 1
        return lo


def _next_pair(model, lower, lo, hi):
    """The next thresholds to run: the predicted crossing of `lower` and the one above it (none in [lo, hi] has
    been run: every run moves lo or hi past itself, or ends the search); lo alone if even lo is predicted to
    fall short."""
    t = model.crossing(lower, lo, hi)
    if model.predict(t) < lower:  # predicted too small even at lo: no neighbour above can be the answer
        return [t]
    return [x for x in (t, t + 1) if x <= hi]


class Prober:
    """Runs the learner at several thresholds: the first here, the others in one forked process if `parallel`."""

    def __init__(self, learner, inner_chars, parallel):
        self._learner, self._inner_chars, self._parallel = learner, inner_chars, parallel
        self._pool = None

    def __enter__(self):
        if self._parallel:
            global _CHILD_STATE
            _CHILD_STATE = (self._learner, self._inner_chars)  # forked at the first submit, state and all
            self._pool = concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"))
        return self

    def __exit__(self, *exc):
        global _CHILD_STATE
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
        _CHILD_STATE = None

    def run(self, thresholds):
        """[(threshold, tokens, seconds)] in the order given."""
        if self._pool is None:
            return [_timed(self._learner, t, self._inner_chars) for t in thresholds]
        later = [self._pool.submit(_timed_child, t) for t in thresholds[1:]]
        return [_timed(self._learner, thresholds[0], self._inner_chars)] + [f.result() for f in later]


def _timed(learner, threshold, inner_chars):
    start = time.time()
    tokens = learn_at(learner, threshold, inner_chars)
    return threshold, tokens, time.time() - start


def _timed_child(threshold):
    learner, inner_chars = _CHILD_STATE
    return _timed(learner, threshold, inner_chars)


def search_threshold(learner, lower, upper, lo, hi, inner_chars, parallel=False, log=print):
    """(tokens, threshold, too_small): the learner's vocabulary at a threshold in [lo, hi] whose size lands in
    [lower, upper] (the largest such threshold among those run), else at the largest threshold run whose size is
    >= lower, else (too small) at the smallest run. tf-text's own search bisects the whole count range (~15 runs
    on a few MB); here a few pairs."""
    model, probes, results = SizeModel(learner, inner_chars), {}, {}
    with Prober(learner, inner_chars, parallel) as prober:
        while lo <= hi:
            for threshold, tokens, seconds in prober.run(_next_pair(model, lower, lo, hi)):
                probes[threshold], results[threshold] = len(tokens), tokens
                model.record(threshold, len(tokens))
                log(f"learner at frequency threshold {threshold}: {len(tokens)} tokens ({seconds:.1f}s)")
            landed = [t for t, n in probes.items() if lower <= n <= upper]
            if landed:
                return results[max(landed)], max(landed), False
            lo = max([lo] + [t + 1 for t, n in probes.items() if n > upper])
            hi = min([hi] + [t - 1 for t, n in probes.items() if n < lower])
    above = [t for t, n in probes.items() if n >= lower]
    best = max(above) if above else min(probes)
    return results[best], best, not above
