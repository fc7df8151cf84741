"""BertTokenizer's word split with offsets (what span QA and tagging need): Google's words, code-point
offsets into the original text, and wordpieces that concatenate to the tokenizer's own ids."""


import numpy as np
import tensorflow as tf

from bert_tf.text.tokenizer import BertTokenizer
from fixtures import datasets

SPECIAL = [
    "Café 北京 — naïve résumé, with punctuation!", "a\u200bb c\x00d \u200b e", "", "   ", "İstanbul ǅ ﬁ x\u0301y",
    "x" * 250 + " short", "日本語のテキスト、です。", "Ελληνικά ΣΟΦΟΣ", "emoji 😀 ok", "tab\tnew\nline\r\u3000ideo",
]


def test_words_offsets_and_pieces_match_the_tokenizer(minilm_vocab):
    tok = BertTokenizer(minilm_vocab)
    texts = datasets.real_sentences(2000) + SPECIAL
    words, starts, ends = tok.split_words(tf.constant(texts))
    pieces = tok.tokenize_words(words)
    ids = tok(tf.constant(texts))
    for i, text in enumerate(texts):
        row_words = [w.decode("utf-8") for w in words[i].numpy()]
        spans = list(zip(starts[i].numpy().tolist(), ends[i].numpy().tolist()))
        assert [text[a:b] for a, b in spans] == row_words, text
        assert all(len(p) > 0 for p in pieces[i].to_list()), text
        assert pieces[i].flat_values.numpy().tolist() == ids[i].numpy().tolist(), text
    # Google's words: punctuation and CJK ideographs alone, control/format characters inside a word kept
    # in its span (and dropped from its pieces), whitespace-only input has none.
    words, starts, _ = tok.split_words(tf.constant(SPECIAL[:4]))
    assert [w.decode() for w in words[0].numpy()] == ["Café", "北", "京", "—", "naïve", "résumé", ",", "with",
                                                    "punctuation", "!"]
    assert [w.decode() for w in words[1].numpy()] == ["a\u200bb", "c\x00d", "e"]
    assert words[2].numpy().tolist() == [] and words[3].numpy().tolist() == []
    np.testing.assert_array_equal(starts[1].numpy(), [0, 4, 10])


def test_pieces_with_word_offsets_equal_the_word_path(minilm_vocab):
    """`tokenize_with_word_offsets` (ASCII rows: one FastBertTokenizer op) = `split_words` + `tokenize_words`
    (Google's rules) on every row: same ids, and each piece carries its word's code-point span."""
    tok = BertTokenizer(minilm_vocab)
    texts = datasets.real_sentences(1000) + SPECIAL + [
        "plain ascii only", "x" * 201, "un##aff ## # a#b", "UPPER case Mixed", "tab\tsep\r\nend", "bell\x07char"]
    for batch in (texts, [t for t in texts if t.isascii()], [t for t in texts if not t.isascii()]):
        ids, starts, ends = tok.tokenize_with_word_offsets(tf.constant(batch))
        words, w_starts, w_ends = tok.split_words(tf.constant(batch))
        pieces = tok.tokenize_words(words)
        for i, text in enumerate(batch):
            expect_ids, expect_spans = [], []
            for word_pieces, a, b in zip(pieces[i].to_list(), w_starts[i].numpy(), w_ends[i].numpy()):
                expect_ids += word_pieces
                expect_spans += [(a, b)] * len(word_pieces)
            assert ids[i].numpy().tolist() == expect_ids, text
            assert list(zip(starts[i].numpy().tolist(), ends[i].numpy().tolist())) == expect_spans, text
    assert tok.tokenize_with_word_offsets(tf.constant([], tf.string))[0].shape[0] == 0
