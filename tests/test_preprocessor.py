"""BertPreprocessor against outside references: Google's tokenizer rules (plain
Python, tests/google_reference_tokenizer.py) and Hugging Face BertTokenizerFast
on the real MiniLM vocab, on real and adversarial text."""

import os
import random
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras  # noqa: E402
from transformers import BertTokenizerFast  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from google_reference_tokenizer import GoogleReferenceTokenizer  # noqa: E402

from fixtures import datasets  # noqa: E402
from bert_tf.text.preprocessor import BertPreprocessor, load_vocab  # noqa: E402

SEQ = 128

# Varied text: prose, numbers, punctuation, accents, CJK, emoji, control and
# zero-width characters, U+FFFD, long words, empty and whitespace-only input.
VARIED = [
    "The quick brown fox jumps over the lazy dog; it cost $4.50 (about €4,20) on 12/03/2019 at 3:45pm!",
    "Hello, World! It's 2024 -- isn't it? \"Quoted\" text, [brackets], {braces} & <angles> #hash @user "
    "~tilde ^caret |pipe| `tick`",
    "Café naïve résumé façade coöperate São Paulo Zürich Ångström Øresund Łódź Dvořák jalapeño",
    "ÉCOLE NORMALE SUPÉRIEURE — l'été à Montréal «entre guillemets» … ¿Qué tal? ¡Olé!",
    "北京大学是中国的一所著名大学。我爱自然语言处理！",
    "日本語のテキスト：東京は日本の首都です。カタカナとひらがな。",
    "한국어 문장입니다. 서울은 대한민국의 수도입니다.",
    "Mixed 中文 and English: BERT模型 works well 很好.",
    "Emoji test 😀👍🏽 🇺🇸 ❤️ family: 👨‍👩‍👧‍👦 done ✔",
    "zero\u200bwidth\u200cjoin\u200dnon\ufeffbreak and soft\u00adhyphen, word\u2060joiner",
    "control\x01chars\x07here\x1b[0m and\x7fdel \x85next \x9fc1",
    "tabs\tand\nnewlines\r\nand\u00a0nbsp\u2003em\u3000ideographic\u2028line\u2029para\u202fnarrow",
    "replacement \ufffd char and \ufffd\ufffd double, also x\ufffdy",
    "nul\x00byte and vertical\x0btab and form\x0cfeed",
    "acute ´ accent `grave` ¨ diaeresis ¸ cedilla ˆ modifier",
    "superscripts x² y³ ½ ¼ ﬁ ligature ™ ℃ № Ⅻ ① full-width ＡＢＣ１２３",
    "Cyrillic Москва, Ukrainian Київ, Turkish İstanbul ıi, Greek Ὀδυσσεύς",
    "German Straße STRASSE Maß, Dutch ĳ IJ, Vietnamese Tiếng Việt",
    "Arabic العربية النص, Hebrew עברית, Hindi हिन्दी भाषा, Thai ภาษาไทยเป็นภาษาที่สวยงาม",
    "Math ∑ ∫ √ ≤ ≥ ≠ ∞ → ← ↔ ⇒ ∀x∈ℝ: x²≥0; π≈3.14159",
    "URLs: https://example.com/path?q=1&r=2#frag and email john.doe+tag@mail.co.uk",
    "Numbers 1,234,567.89 -42 +3.0e-10 0x1F 1st 2nd 3rd 99% 1/2",
    "word" * 30,  # 120 chars: over HF's default 100, under Google's 200
    "x" * 100,
    "y" * 200,
    "z" * 201,
    "supercalifragilistic" * 12 + " short " + "é" * 150 + " " + "é" * 201,
    "ภาษาไทย" * 30,  # 210 chars, 630 bytes, no spaces
    "ภาษาไทย" * 28,  # 196 chars, 588 bytes
    "a" * 199 + "," + "b" * 250 + "." + "c" * 200,
    "",
    " ",
    "   \t\n\r  \u3000\u00a0 ",
    "\u200b\ufeff\x00",
    "[CLS] [SEP] [UNK] [MASK] [PAD] ##ing ## # unaffable",
    "unassigned \U000e0001 tag \U000e0041 and \U0001F9FF",
    "combining a\u0301 e\u0300 n\u0303 \u0301alone \u0308x Z\u0351\u0352",
    "Hangul jamo ᄀᄁ and compatibility ㄱㄴ, halfwidth ｶﾀｶﾅ",
    "CJK ext 𠀀𠀁 𪜀 compat 豈 更 and radicals ⺀ ⼀",
    "Roman numerals Ⅰ Ⅱ ⅰ and circled Ⓐ ⓐ, small caps ᴀʙᴄ",
]
# Where Google's rules and HF's tokenizer legitimately disagree (we follow Google):
HF_DIFFERENT = [
    "Greek ΑΧΙΛΛΕΥΣ",  # Python's str.lower() gives a final sigma; HF lower-cases char by char
    "private use \ue000\uf8ff x",  # HF drops Co characters, Google keeps them ([UNK])
]
INVALID_UTF8 = [
    b"ab\xffcd",
    b"\xe2\x82",
    b"x\xe2\x82y z",
    b"\xf0\x9f\x98 emoji cut",
    b"overlong a\xc0\xafb",
    b"surrogate \xed\xa0\x80z",
    b"too big \xf4\x90\x80\x80q",
    b"caf\xe9 latin-1",
    b"\x80\x81\x82",
    "valid é".encode() + b"\xc3",
]


def _vocab_path(minilm_dir):
    return os.path.join(minilm_dir, "vocab.txt")


@pytest.fixture(scope="module")
def pre(minilm_dir):
    return BertPreprocessor(_vocab_path(minilm_dir), lower_case=True, seq_length=SEQ)


@pytest.fixture(scope="module")
def google(minilm_dir):
    return GoogleReferenceTokenizer.from_file(_vocab_path(minilm_dir), lower_case=True)


@pytest.fixture(scope="module")
def hf(minilm_dir):
    tok = BertTokenizerFast.from_pretrained(minilm_dir)
    assert tok.do_lower_case
    return tok


@pytest.fixture(scope="module")
def hf_google_limits(minilm_dir):
    """HF tokenizer with Google's 200-character word limit (MiniLM's file says 100)."""
    tok = BertTokenizerFast.from_pretrained(minilm_dir)
    tok.backend_tokenizer.model.max_input_chars_per_word = 200
    return tok


@pytest.fixture(scope="module")
def real_text():
    sentences = datasets.real_sentences()
    rng = random.Random(0)
    tweets = [t for t, _ in datasets.tweets()]
    return rng.sample(sentences, 3000) + rng.sample(tweets, 1500)


@pytest.fixture(scope="module")
def cased_vocab(minilm_dir, tmp_path_factory):
    """MiniLM's vocab plus capitalised/upper-case forms of its words: a cased vocab."""
    tokens = load_vocab(_vocab_path(minilm_dir))
    seen = set(tokens)
    extra = []
    for t in tokens:
        if t.isalpha() and t.islower():
            for form in (t.capitalize(), t.upper(), "##" + t.upper()):
                if form not in seen:
                    seen.add(form)
                    extra.append(form)
    path = tmp_path_factory.mktemp("cased") / "vocab.txt"
    path.write_text("\n".join(tokens + extra) + "\n", encoding="utf-8")
    return str(path)


def _tokenize(pre, texts, batch=2000):
    fn = tf.function(pre.tokenize, input_signature=[tf.TensorSpec([None], tf.string)])
    out = []
    for i in range(0, len(texts), batch):
        chunk = [t if isinstance(t, bytes) else t.encode("utf-8") for t in texts[i : i + batch]]
        out.extend(fn(tf.constant(chunk, tf.string)).to_list())
    return out


def _hf_ids(tok, texts):
    enc = tok(list(texts), add_special_tokens=False, split_special_tokens=True)
    return enc["input_ids"]


def _mismatches(texts, got, want):
    return [(t, g, w) for t, g, w in zip(texts, got, want) if g != w]


# ----------------------------------------------------------------------------- ids


def test_varied_text_matches_google_uncased(pre, google):
    texts = VARIED + HF_DIFFERENT
    got = _tokenize(pre, texts)
    bad = _mismatches(texts, got, [google.ids(t) for t in texts])
    assert not bad, bad[:3]


def test_varied_text_matches_hf(pre, google, hf, hf_google_limits):
    got = _tokenize(pre, VARIED + HF_DIFFERENT)
    # With Google's word limit HF agrees on every varied text...
    bad = _mismatches(VARIED, got, _hf_ids(hf_google_limits, VARIED))
    assert not bad, bad[:3]
    # ...and MiniLM's own tokenizer (100-character limit) on all without longer words.
    short = [i for i, t in enumerate(VARIED) if max([len(w) for w in google_words(t)] or [0]) <= 100]
    assert len(short) > 25
    want = _hf_ids(hf, [VARIED[i] for i in short])
    assert [got[i] for i in short] == want
    # The known Google-vs-HF differences: we follow Google.
    n = len(VARIED)
    for t, g, h in zip(HF_DIFFERENT, got[n:], _hf_ids(hf, HF_DIFFERENT)):
        assert g == google.ids(t) and g != h, t


def google_words(text):
    from google_reference_tokenizer import basic_tokenize

    return basic_tokenize(text, lower_case=True)


def test_real_text_matches_google_and_hf(pre, google, hf, real_text):
    got = _tokenize(pre, real_text)
    bad = _mismatches(real_text, got, [google.ids(t) for t in real_text])
    assert not bad, bad[:3]
    hf_got = _hf_ids(hf, real_text)
    differ = [t for t, g, h in zip(real_text, got, hf_got) if g != h]
    # HF differs from Google only on final sigma / private-use / >100-char words.
    assert len(differ) <= 2, differ
    assert sum(len(g) for g in got) > 100_000  # real work was done


def test_cased_matches_google(cased_vocab, real_text):
    pre = BertPreprocessor(cased_vocab, lower_case=False, seq_length=SEQ)
    google = GoogleReferenceTokenizer.from_file(cased_vocab, lower_case=False)
    texts = VARIED + HF_DIFFERENT + real_text[:1500]
    got = _tokenize(pre, texts)
    bad = _mismatches(texts, got, [google.ids(t) for t in texts])
    assert not bad, bad[:3]
    # Case is really kept: capitalised words map to their own ids.
    ids = got[0]
    assert google.vocab["The"] == ids[0] != google.vocab["the"]


@pytest.mark.parametrize("lower_case", [True, False])
def test_every_code_point_matches_google(minilm_dir, lower_case):
    """Each code point (all of the BMP, a sample of the rest) in word contexts."""
    vocab = _vocab_path(minilm_dir)
    pre = BertPreprocessor(vocab, lower_case=lower_case)
    google = GoogleReferenceTokenizer.from_file(vocab, lower_case=lower_case)
    cps = [c for c in range(0x10000) if not 0xD800 <= c <= 0xDFFF]
    cps += list(range(0x10000, 0x110000, 97))
    texts = []
    for c in cps:
        ch = chr(c)
        texts.append("a" + ch + "b " + ch + " X" + ch + ch.upper() + " É" + ch + "\u0301")
        texts.append("a" + ch + "b " + ch + " X" + ch + ch.upper() + "y")  # ASCII row if ch is
    got = _tokenize(pre, texts, batch=20000)
    bad = [(hex(ord(t[1])), g, google.ids(t)) for t, g in zip(texts, got) if g != google.ids(t)]
    assert not bad, bad[:5]


def test_invalid_utf8_drops_bad_bytes(pre, google):
    got = _tokenize(pre, INVALID_UTF8)
    want = [google.ids(b) for b in INVALID_UTF8]  # decodes with errors="ignore"
    assert got == want
    assert got[0] == google.ids("abcd")
    out = pre(tf.constant(INVALID_UTF8))
    assert out["input_word_ids"].shape == (len(INVALID_UTF8), SEQ)


def test_long_words_and_long_text(pre, google):
    vocab = google.vocab
    unk = vocab["[UNK]"]
    assert _tokenize(pre, ["z" * 201])[0] == [unk]
    assert _tokenize(pre, ["é" * 201])[0] == [unk]
    assert len(_tokenize(pre, ["y" * 200])[0]) > 1
    assert _tokenize(pre, ["ภาษาไทย" * 28])[0] == google.ids("ภาษาไทย" * 28)
    # A whole document in one string: ~600k characters.
    doc = " ".join(datasets.real_sentences(4000))
    got = _tokenize(pre, [doc])[0]
    assert got == google.ids(doc)
    out = pre(tf.constant([doc]))
    np.testing.assert_array_equal(out["input_word_ids"][0, 1:SEQ - 1], got[: SEQ - 2])


# ------------------------------------------------------------------------- packing


def test_single_packing_matches_google_and_hf(pre, google, hf, real_text):
    texts = VARIED[:22] + VARIED[30:34] + real_text[:500]
    out = pre(tf.constant([t.encode() for t in texts]))
    for key in ("input_word_ids", "input_mask", "input_type_ids"):
        assert out[key].dtype == tf.int32
        assert out[key].shape == (len(texts), SEQ)
    want = [google.pack(t, seq_length=SEQ) for t in texts]
    np.testing.assert_array_equal(out["input_word_ids"], [w[0] for w in want])
    np.testing.assert_array_equal(out["input_mask"], [w[1] for w in want])
    np.testing.assert_array_equal(out["input_type_ids"], [w[2] for w in want])
    enc = hf(texts, padding="max_length", truncation=True, max_length=SEQ)
    np.testing.assert_array_equal(out["input_word_ids"], enc["input_ids"])
    np.testing.assert_array_equal(out["input_mask"], enc["attention_mask"])
    np.testing.assert_array_equal(out["input_type_ids"], enc["token_type_ids"])
    # Empty and whitespace-only strings: just [CLS] [SEP].
    empty = pre(tf.constant(["", " ", "\t\n\u3000", "\u200b\x00"]))
    cls, sep = google.vocab["[CLS]"], google.vocab["[SEP]"]
    np.testing.assert_array_equal(empty["input_word_ids"][:, :3], [[cls, sep, 0]] * 4)
    np.testing.assert_array_equal(empty["input_mask"].numpy().sum(1), [2] * 4)


def test_pair_packing_matches_google_truncate_seq_pair(minilm_dir):
    """Every (len(a), len(b)) combination around the budget, several seq_lengths."""
    vocab = _vocab_path(minilm_dir)
    google = GoogleReferenceTokenizer.from_file(vocab)
    for seq_length in (3, 4, 7, 8, 16):
        pre = BertPreprocessor(vocab, seq_length=seq_length)
        texts_a, texts_b = [], []
        for la in range(0, seq_length + 3):
            for lb in range(0, seq_length + 3):
                texts_a.append(" ".join(["the"] * la))
                texts_b.append(" ".join(["cat"] * lb))
        out = pre([tf.constant(texts_a), tf.constant(texts_b)])
        want = [google.pack(a, b, seq_length=seq_length) for a, b in zip(texts_a, texts_b)]
        np.testing.assert_array_equal(out["input_word_ids"], [w[0] for w in want])
        np.testing.assert_array_equal(out["input_mask"], [w[1] for w in want])
        np.testing.assert_array_equal(out["input_type_ids"], [w[2] for w in want])


def test_pair_packing_real_text_matches_google_and_hf(pre, google, hf, real_text):
    rng = random.Random(1)
    a = real_text[:400] + VARIED
    b = rng.sample(real_text, 400) + list(reversed(VARIED))
    # Some long pairs so that truncation really happens.
    a += [" ".join(real_text[i : i + 4]) for i in range(0, 200, 4)]
    b += [" ".join(real_text[i : i + 3]) for i in range(1000, 1150, 3)]
    out = pre([tf.constant(a), tf.constant(b)])
    want = [google.pack(x, y, seq_length=SEQ) for x, y in zip(a, b)]
    np.testing.assert_array_equal(out["input_word_ids"], [w[0] for w in want])
    np.testing.assert_array_equal(out["input_mask"], [w[1] for w in want])
    np.testing.assert_array_equal(out["input_type_ids"], [w[2] for w in want])
    assert (out["input_mask"].numpy().sum(1) == SEQ).sum() > 40
    # HF's "longest_first" truncation is Google's rule too (texts with no HF differences).
    n = 400
    enc = hf(a[:n], b[:n], padding="max_length", truncation="longest_first", max_length=SEQ)
    np.testing.assert_array_equal(out["input_word_ids"][:n], enc["input_ids"])
    np.testing.assert_array_equal(out["input_type_ids"][:n], enc["token_type_ids"])


def test_bert_pack_inputs_and_tokenize(pre, google):
    tokens = pre.tokenize(tf.constant(["Hello world!", "", "unaffable"]))
    assert isinstance(tokens, tf.RaggedTensor) and tokens.dtype == tf.int32
    assert tokens.to_list() == [google.ids("Hello world!"), [], google.ids("unaffable")]
    packed = pre.bert_pack_inputs([tokens], seq_length=6)
    assert packed["input_word_ids"].shape == (3, 6)
    assert packed["input_word_ids"].numpy()[0].tolist() == google.pack("Hello world!", seq_length=6)[0]
    b = pre.tokenize(tf.constant(["a b c d e f", "x", "y"]))
    pairs = pre.bert_pack_inputs([tokens, b], seq_length=9)
    for i, (ta, tb) in enumerate(zip(["Hello world!", "", "unaffable"], ["a b c d e f", "x", "y"])):
        ids, mask, types = google.pack(ta, tb, seq_length=9)
        assert pairs["input_word_ids"].numpy()[i].tolist() == ids
        assert pairs["input_type_ids"].numpy()[i].tolist() == types
    # Scalar input.
    single = pre(tf.constant("Hello world!"))
    assert single["input_word_ids"].shape == (SEQ,)


def test_dynamic_padding(minilm_dir, google):
    vocab = _vocab_path(minilm_dir)
    texts = ["hello world", "the cat sat on the mat today ."]
    pre = BertPreprocessor(vocab, seq_length=SEQ, dynamic_padding=True)
    out = pre(tf.constant(texts))
    assert out["input_word_ids"].shape == (2, 16)  # longest is 10 -> rounded up to 8s
    np.testing.assert_array_equal(out["input_word_ids"][1], google.pack(texts[1], seq_length=16)[0])
    exact = BertPreprocessor(vocab, seq_length=SEQ, dynamic_padding=True, pad_to_multiple_of=None)
    assert exact(tf.constant(texts))["input_word_ids"].shape == (2, 10)
    capped = BertPreprocessor(vocab, seq_length=12, dynamic_padding=True)
    assert capped(tf.constant(["word " * 50]))["input_word_ids"].shape == (1, 12)
    pairs = pre([tf.constant(["a"]), tf.constant(["b c"])])
    assert pairs["input_word_ids"].shape == (1, 8)
    assert pairs["input_type_ids"].numpy().tolist() == [[0, 0, 0, 1, 1, 1, 0, 0]]
    assert BertPreprocessor.from_config(capped.get_config()).get_config() == capped.get_config()


# ---------------------------------------------------------------------- TF plumbing


def test_tf_function_no_retrace_and_static_shape(pre):
    fn = tf.function(lambda s: pre(s), input_signature=[tf.TensorSpec([None], tf.string)])
    for n in (1, 3, 17):
        out = fn(tf.constant(["some text"] * n))
        assert out["input_word_ids"].shape == (n, SEQ)
    assert fn.experimental_get_tracing_count() == 1
    spec = fn.get_concrete_function().structured_outputs["input_word_ids"]
    assert spec.shape.as_list() == [None, SEQ]


def test_dataset_map(pre, google):
    texts = ["first sentence .", "Second one, longer than the first!", "", "日本語"]
    ds = tf.data.Dataset.from_tensor_slices(texts).batch(3).map(pre)
    rows = np.concatenate([b["input_word_ids"].numpy() for b in ds])
    np.testing.assert_array_equal(rows, [google.pack(t, seq_length=SEQ)[0] for t in texts])
    pair_ds = tf.data.Dataset.from_tensor_slices((texts, texts[::-1])).batch(2)
    pair_ds = pair_ds.map(lambda a, b: pre([a, b]))
    rows = np.concatenate([b["input_type_ids"].numpy() for b in pair_ds])
    np.testing.assert_array_equal(
        rows, [google.pack(a, b, seq_length=SEQ)[2] for a, b in zip(texts, texts[::-1])]
    )


def test_keras_functional_model(pre, google):
    text = keras.Input(shape=(), dtype="string")
    model = keras.Model(text, pre(text))
    out = model(tf.constant(["a functional model"]))
    np.testing.assert_array_equal(out["input_word_ids"][0], google.pack("a functional model", seq_length=SEQ)[0])


def test_saved_model_export_tf2_and_session(pre, google, tmp_path):
    export_dir = str(tmp_path / "pre")
    archive = keras.export.ExportArchive()
    archive.track(pre)
    archive.add_endpoint(
        "serve", lambda s: pre(s), input_signature=[tf.TensorSpec([None], tf.string, name="text")]
    )
    archive.add_endpoint(
        "pairs",
        lambda a, b: pre([a, b]),
        input_signature=[tf.TensorSpec([None], tf.string, name="a"), tf.TensorSpec([None], tf.string, name="b")],
    )
    archive.write_out(export_dir, verbose=False)
    texts = ["Exported model, café 北京!", ""]
    want = [google.pack(t, seq_length=SEQ)[0] for t in texts]
    loaded = tf.saved_model.load(export_dir)
    np.testing.assert_array_equal(loaded.serve(tf.constant(texts))["input_word_ids"], want)
    # TF Serving's loader: a TF1 session.
    with tf.compat.v1.Session(graph=tf.Graph()) as sess:
        meta = tf.compat.v1.saved_model.load(sess, ["serve"], export_dir)
        sig = meta.signature_def["serve"]
        feed = {sig.inputs["text"].name: texts}
        fetch = {k: v.name for k, v in sig.outputs.items()}
        res = sess.run(fetch, feed)
        np.testing.assert_array_equal(res["input_word_ids"], want)
        sig = meta.signature_def["pairs"]
        res = sess.run(
            {k: v.name for k, v in sig.outputs.items()},
            {sig.inputs["a"].name: ["a b"], sig.inputs["b"].name: ["c"]},
        )
        np.testing.assert_array_equal(res["input_type_ids"][0], google.pack("a b", "c", seq_length=SEQ)[2])


# ---------------------------------------------------------------------- config/errors


def test_get_config_round_trip_and_special_tokens(pre, google):
    config = pre.get_config()
    clone = BertPreprocessor.from_config(config)
    assert clone.get_config() == config
    assert config["seq_length"] == SEQ and config["lower_case"] is True
    text = tf.constant(["Round trip!"])
    np.testing.assert_array_equal(clone(text)["input_word_ids"], pre(text)["input_word_ids"])
    st = pre.special_tokens
    v = google.vocab
    assert st["vocab_size"] == len(google.tokens) == 30522
    for name, key in [("[CLS]", "cls_id"), ("[SEP]", "sep_id"), ("[PAD]", "pad_id"), ("[UNK]", "unk_id"),
                      ("[MASK]", "mask_id")]:
        assert st[name] == st[key] == v[name]
    # The vocabulary is data of the layer, not a path: the config is self-contained.
    assert "vocab_file" not in config and config["vocabulary"] == google.tokens == pre.vocabulary
    assert (pre.lower_case, pre.seq_length) == (True, SEQ)


def test_vocab_errors_name_the_file(tmp_path):
    missing = str(tmp_path / "nope" / "vocab.txt")
    with pytest.raises(FileNotFoundError, match="nope"):
        BertPreprocessor(missing)
    bad = tmp_path / "bad_vocab.txt"
    bad.write_text("[PAD]\n[UNK]\n[CLS]\nhello\n")
    with pytest.raises(ValueError, match=r"bad_vocab\.txt.*\[SEP\]"):
        BertPreprocessor(str(bad))
    with pytest.raises(ValueError, match="bad_vocab"):
        load_vocab(str(bad))
    empty = tmp_path / "empty_vocab.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty_vocab"):
        load_vocab(str(empty))


def test_vocab_with_blank_and_duplicate_lines(tmp_path):
    path = tmp_path / "vocab.txt"
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", "", "world", "hello", "##s"]
    path.write_text("\n".join(tokens) + "\n")
    assert load_vocab(str(path)) == tokens
    google = GoogleReferenceTokenizer(tokens)
    pre = BertPreprocessor(str(path), seq_length=8)
    text = "hello worlds hellos"
    assert pre.tokenize(tf.constant([text])).to_list()[0] == google.ids(text) == [7, 6, 8, 7, 8]
