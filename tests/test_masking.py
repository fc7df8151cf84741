"""Dynamic masking (tf.data) checked against Google's masking rule on real text."""

import numpy as np
import pytest
import tensorflow as tf

from fixtures import datasets
from bert_tf.pretraining import data as pdata
from bert_tf.pretraining.masking import DynamicMasker, raw_text_pairs_dataset, unmask_features

L, P = 128, 20


@pytest.fixture(scope="module")
def vocab(minilm_vocab):
    from bert_tf import load_vocab

    return load_vocab(minilm_vocab)


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    text = open(datasets.pretraining_corpus_file(), encoding="utf-8").read()
    p = tmp_path_factory.mktemp("m") / "small.txt"
    p.write_text(text[:400_000].rsplit("\n\n", 1)[0] + "\n", encoding="utf-8")
    return str(p)


@pytest.fixture(scope="module")
def records(small_corpus, minilm_vocab, tmp_path_factory):
    """Google-format records, masked (as Google's tool writes them) and unmasked."""
    d = tmp_path_factory.mktemp("r")
    out = {}
    for name, prob in (("masked", 0.15), ("unmasked", 0.0)):
        path = str(d / f"{name}.tfrecord")
        pdata.create_pretraining_data([small_corpus], [path], minilm_vocab, max_seq_length=L,
                                      max_predictions_per_seq=P, masked_lm_prob=prob, dupe_factor=1,
                                      random_seed=3, verbose=False)
        out[name] = path
    return out


def _batches(path, batch=512):
    spec = pdata.google_feature_spec(L, P)
    return tf.data.TFRecordDataset([path]).map(lambda r: tf.io.parse_single_example(r, spec)).batch(batch)


def _original(path):
    """Original ids of every record, restored in NumPy (independently of unmask_features)."""
    rows = []
    for b in _batches(path):
        ids = b["input_ids"].numpy().copy()
        w = b["masked_lm_weights"].numpy() > 0
        for i in range(len(ids)):
            ids[i, b["masked_lm_positions"].numpy()[i][w[i]]] = b["masked_lm_ids"].numpy()[i][w[i]]
        rows.append((ids, b["input_mask"].numpy()))
    return np.concatenate([r[0] for r in rows]), np.concatenate([r[1] for r in rows])


def test_unmask_restores_original_ids(records, vocab):
    # the same pairs masked and unmasked share the random stream only up to the
    # masking, so compare the restored ids of masked records with NumPy's
    ref, _ = _original(records["masked"])
    got = np.concatenate([unmask_features(b)["input_ids"].numpy() for b in _batches(records["masked"])])
    np.testing.assert_array_equal(got, ref)
    assert not (got == vocab.index("[MASK]")).any()
    # unmasked records carry no predictions and no [MASK]
    un = next(iter(_batches(records["unmasked"])))
    assert float(tf.reduce_sum(un["masked_lm_weights"])) == 0.0
    assert not (un["input_ids"].numpy() == vocab.index("[MASK]")).any()


def test_dynamic_masking_follows_googles_rule(records, vocab, minilm_vocab):
    masker = DynamicMasker.from_vocab_file(minilm_vocab, max_predictions_per_seq=P, seed=11)
    ids, mask = _original(records["unmasked"])
    cls_id, sep_id, mask_id = vocab.index("[CLS]"), vocab.index("[SEP]"), vocab.index("[MASK]")
    feats = {"input_ids": tf.constant(ids), "input_mask": tf.constant(mask)}
    out = {k: v.numpy() for k, v in masker(feats, step=0).items()}
    again = masker(feats, step=0)["input_ids"].numpy()
    other = masker(feats, step=1)["input_ids"].numpy()
    np.testing.assert_array_equal(out["input_ids"], again)  # stateless: same step, same masks
    assert (out["input_ids"] != other).any()  # a new step draws new masks
    n = mask.sum(1)
    w = out["masked_lm_weights"] > 0
    k = w.sum(1)
    want = np.array([min(P, max(1, int(round(x * 0.15)))) for x in n])  # Google's num_to_predict
    np.testing.assert_array_equal(k, want)
    pos, lab = out["masked_lm_positions"], out["masked_lm_ids"]
    for i in range(len(ids)):
        p = pos[i, :k[i]]
        assert (np.diff(p) > 0).all() and (pos[i, k[i]:] == 0).all() and (lab[i, k[i]:] == 0).all()
        assert (ids[i, p] != cls_id).all() and (ids[i, p] != sep_id).all() and (p < n[i]).all()
        np.testing.assert_array_equal(lab[i, :k[i]], ids[i, p])
        untouched = np.ones(L, bool)
        untouched[p] = False
        np.testing.assert_array_equal(out["input_ids"][i][untouched], ids[i][untouched])
    at = np.take_along_axis(out["input_ids"], pos, 1)[w]
    labels = lab[w]
    m = len(at)
    assert abs((at == mask_id).mean() - 0.8) < 4 * np.sqrt(0.16 / m)
    assert abs((at == labels).mean() - 0.1) < 4 * np.sqrt(0.09 / m) + 1e-3
    assert abs(((at != mask_id) & (at != labels)).mean() - 0.1) < 4 * np.sqrt(0.09 / m) + 1e-3


def test_whole_word_dynamic_masking(records, vocab, minilm_vocab):
    masker = DynamicMasker.from_vocab_file(minilm_vocab, max_predictions_per_seq=P,
                                           do_whole_word_mask=True, seed=5)
    ids, mask = _original(records["unmasked"])
    out = masker({"input_ids": tf.constant(ids), "input_mask": tf.constant(mask)}, step=3)
    w = out["masked_lm_weights"].numpy() > 0
    pos = out["masked_lm_positions"].numpy()
    cont = np.array([t.startswith("##") for t in vocab])
    specials = {vocab.index("[CLS]"), vocab.index("[SEP]")}
    n = mask.sum(1)
    pieces = 0
    exact = 0
    for i in range(len(ids)):
        chosen = np.zeros(L, bool)
        chosen[pos[i][w[i]]] = True
        want = min(P, max(1, int(round(n[i] * 0.15))))
        assert chosen.sum() <= want
        exact += chosen.sum() == want
        for j in range(2, n[i]):
            if cont[ids[i, j]] and ids[i, j - 1] not in specials:
                assert chosen[j] == chosen[j - 1], (i, j)
                pieces += chosen[j]
    assert pieces > 50
    # Google skips a word that would overflow and keeps filling with shorter ones
    assert exact / len(ids) > 0.95


def test_raw_text_pairs_are_resampled_each_epoch(small_corpus, minilm_vocab, vocab):
    ds = raw_text_pairs_dataset(small_corpus, minilm_vocab, max_seq_length=64, seed=1)
    # the corpus gives a few hundred pairs per epoch; take two epochs' worth
    rows = list(ds.take(1200).as_numpy_iterator())
    labels = np.array([r["next_sentence_labels"][0] for r in rows])
    assert 0.4 < labels.mean() < 0.7
    sep_id = vocab.index("[SEP]")
    for r in rows[:50]:
        n = r["input_mask"].sum()
        assert r["input_ids"][0] == vocab.index("[CLS]") and r["input_ids"][n - 1] == sep_id
        assert (r["input_ids"] == sep_id).sum() == 2 and n <= 64
    keys = [r["input_ids"].tobytes() for r in rows]
    assert len(set(keys)) > 0.9 * len(keys)  # epochs differ (new pairs, new truncation)
    masker = DynamicMasker.from_vocab_file(minilm_vocab, max_predictions_per_seq=10)
    batch = next(iter(ds.batch(8).enumerate().map(lambda i, f: masker(f, i))))
    assert batch["masked_lm_positions"].shape == (8, 10)


def test_bad_settings_are_clear_errors(minilm_vocab, tmp_path):
    with pytest.raises(ValueError, match="masked_lm_prob"):
        DynamicMasker.from_vocab_file(minilm_vocab, masked_lm_prob=1.5)
    v = tmp_path / "vocab.txt"
    v.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n")
    with pytest.raises(ValueError, match=r"vocab.txt.*\[MASK\]"):
        DynamicMasker.from_vocab_file(str(v))
