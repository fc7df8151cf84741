"""tensorflow-text's WordPiece learner (`wordpiece_tokenizer_learner_lib.learn` at one frequency threshold),
computed in a way that costs a fraction of its time, with exactly its result.

The algorithm (tf-text's, restated): every character of the learning words is a token, as `c` and `##c`.
Each of `num_iterations` rounds splits every word into segment starts (round 1: every position; later rounds:
greedy longest-match over the previous round's tokens), counts for each start every substring beginning
there (`##` marks those not at the word's start), then walks the substrings from the longest down, keeping
those whose count is >= the threshold and subtracting each substring's count from all of its prefixes.
The vocabulary is: reserved tokens, the characters sorted, then the kept tokens by count (ties by token).

What makes it cheap: after the prefix subtraction, a substring's count is just how often it is the *whole
remainder* of a word from a segment start (the count of a substring is the sum over its extensions, so the
subtraction leaves only the occurrences that extend no further). So a round only counts, per word, the word
itself and the `##` remainders after its segment starts; the first round's counts do not depend on the
threshold and are computed once; and remainders shared by many words are segmented once per round.

Where tf-text's keys collide (a word that begins with the joiner, e.g. `##ab`, and the continuation `##ab`),
its dictionary keeps the continuation's count, as here.
"""

import collections

JOINER = "##"


class WordPieceLearner:
    """The word counts, filtered and pre-counted once, learned from at any number of thresholds.

    Same arguments as tf-text's `learn` with `include_joiner_token=True`, `max_input_tokens=-1` (no cap),
    `upper_thresh=lower_thresh=threshold`: `learn(threshold)` returns exactly its vocabulary.
    """

    def __init__(self, word_counts, reserved_tokens, num_iterations=4, max_token_length=50,
                 max_unique_chars=1000, joiner=JOINER):
        word_counts = list(word_counts.items() if isinstance(word_counts, dict) else word_counts)
        if not word_counts:
            raise ValueError("no word counts to learn from")
        if not joiner:
            raise ValueError("the joiner must not be empty")
        self.reserved_tokens = list(reserved_tokens)
        self.num_iterations = int(num_iterations)
        self.joiner = joiner
        counts = [n for _, n in word_counts]
        # tf-text clips its threshold range to the counts of all words given, before any filtering.
        self._min_count, self._max_count = min(counts), max(counts)
        reserved = set(self.reserved_tokens)
        words = [(w, n) for w, n in word_counts if len(w) <= max_token_length and w not in reserved]
        chars = {c for w, _ in words for c in w}
        if len(chars) > max_unique_chars:
            allowed = _top_chars(words, max_unique_chars)
            words = [(w, n) for w, n in words if allowed.issuperset(w)]
            chars = {c for w, _ in words for c in w}
        self.words = words
        self.chars = sorted(chars)
        # Every round counts each word once at its start (the same counts in every round), and round 1 counts
        # every suffix: both are computed once.
        self._whole, self._first_continued = _first_round_counts(self.words)
        # Least frequent first: a round segments only the words below the threshold (the others are tokens).
        self._by_count = sorted(self._whole.items(), key=lambda item: item[1])
        # word -> (end, count) of its proper prefixes (2 characters or more) that are words, longest first: a
        # word's first segment is the longest of them counted >= the threshold, else its first character.
        self._word_prefixes = {w: prefixes for w in self._whole
                               if (prefixes := [(end, self._whole[w[:end]]) for end in range(len(w) - 1, 1, -1)
                                                if w[:end] in self._whole])}

    def first_round_counts(self):
        """The counts of the first round's tokens but the characters (the words, and the `##` remainders after
        every position): at threshold T the first round keeps those >= T, the later rounds a share of them."""
        return [*self._whole.values(), *self._first_continued.values()]

    def effective_threshold(self, threshold):
        """The threshold tf-text uses when asked for `threshold` (its search range clipped to the counts)."""
        upper = min(self._max_count, threshold)
        lower = max(self._min_count, threshold)
        return (upper + lower) // 2

    def learn(self, threshold):
        """The vocabulary (reserved tokens, characters, kept tokens) at frequency `threshold` (>= 1)."""
        threshold = self.effective_threshold(threshold)
        if threshold < 1:
            raise ValueError(f"frequency threshold {threshold} must be >= 1")
        tokens = self._with_chars({})
        frequent_words = {w: n for w, n in self._whole.items() if n >= threshold}  # the same in every round
        after_first_segment, joiner_words = self._after_first_segment(threshold)
        for round_index in range(self.num_iterations):
            if round_index == 0:
                continued = self._first_continued
            else:
                continued = self._recount(tokens, after_first_segment, joiner_words)
            tokens = self._select(frequent_words, continued, threshold)
        return self._vocabulary(tokens)

    def _select(self, frequent_words, continued, threshold):
        """The words and remainders counted at least `threshold` times -> count, and every character token."""
        tokens = dict(frequent_words)
        # A continuation overwrites a word of the same spelling (tf-text visits it later).
        tokens.update((self.joiner + x, n) for x, n in continued.items() if n >= threshold)
        return self._with_chars(tokens)

    def _with_chars(self, tokens):
        for c in self.chars:
            tokens.setdefault(c, 1)
            tokens.setdefault(self.joiner + c, 1)
        return tokens

    def _after_first_segment(self, threshold):
        """(Counter of the remainders after the first segment of each word counted < `threshold` times, the
        words beginning with the joiner). The first segment is the same in every later round: the tokens a
        word can begin with are the words counted >= `threshold` and the characters, except for a word that
        begins with the joiner (a continuation may match there), left to each round."""
        remainders, joiner_words = {}, []
        get, joiner, word_prefixes = remainders.get, self.joiner, self._word_prefixes  # (a hot loop)
        for word, n in self._by_count:
            if n >= threshold:
                break  # a token itself: one segment
            if word.startswith(joiner):
                joiner_words.append((word, n))
                continue
            end = 1
            for prefix_end, count in word_prefixes.get(word, ()):
                if count >= threshold:
                    end = prefix_end
                    break
            if end < len(word):
                rest = word[end:]
                remainders[rest] = get(rest, 0) + n
        return remainders, joiner_words

    def _recount(self, tokens, after_first_segment, joiner_words):
        """One later round's counts of remainders, over the segment starts found by greedy longest-match with
        `tokens`."""
        inside = {t[len(self.joiner):] for t in tokens if t.startswith(self.joiner)}
        pending = collections.Counter(after_first_segment)
        for word, n in joiner_words:
            end = _longest_prefix(word, tokens)
            if end < len(word):
                pending[word[end:]] += n
        return _propagate_remainders(pending, inside)

    def _vocabulary(self, tokens):
        by_count = sorted(tokens.items(), key=lambda item: (-item[1], item[0]))
        return list(dict.fromkeys([*self.reserved_tokens, *self.chars, *(t for t, _ in by_count)]))


def _top_chars(words, max_unique_chars):
    """The `max_unique_chars` most frequent characters (ties by character), as tf-text picks its alphabet."""
    counts = collections.Counter()
    for w, n in words:
        for c in w:
            counts[c] += n
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return {c for c, _ in ranked[:max_unique_chars]}


def _first_round_counts(words):
    """Round 1 (every position a segment start): (word counts, counts of every proper suffix)."""
    whole, continued = collections.Counter(), {}
    get = continued.get  # a plain dict: Counter's += on a new key costs a Python-level __missing__ call
    for w, n in words:
        whole[w] += n
        for start in range(1, len(w)):
            suffix = w[start:]
            continued[suffix] = get(suffix, 0) + n
    return whole, continued


def _longest_prefix(text, tokens):
    """End of the longest prefix of `text` in `tokens` (a dict or set holding every single character)."""
    end = len(text)
    while end > 1 and text[:end] not in tokens:
        end -= 1
    return end


def _propagate_remainders(pending, inside):
    """Counts of the remainders after every segment start inside words: a remainder is counted, then its
    own remainder after its longest prefix in `inside`, until nothing is left. Longest first, so each
    distinct remainder is segmented once."""
    by_length = collections.defaultdict(dict)
    for x, n in pending.items():
        by_length[len(x)][x] = n
    counts = {}
    longest = max(map(len, inside), default=1)
    for length in range(max(by_length, default=0), 0, -1):
        for x, n in by_length.pop(length, {}).items():
            counts[x] = n
            end = min(length, longest)  # _longest_prefix, inlined: this loop is most of a learner run
            while end > 1 and x[:end] not in inside:
                end -= 1
            if end < length:
                rest = x[end:]
                bucket = by_length[length - end]
                bucket[rest] = bucket.get(rest, 0) + n
    return counts
