"""Throughput mechanics on real text: padding changes no result, variable lengths do not retrace,
bf16 keeps the numbers close. (The speed itself is measured by bench/end_to_end.py and
bench/finetune.py, never here.)

* Real MiniLM on real sentences: logits with each batch padded to its longest sequence equal the
  logits padded to 128, in Keras and through the exported `serving_default` / `encode` signatures,
  whose outputs are only as wide as the request's longest sequence (rounded up to 8).
* The length-bucketed fine-tuning input under `jit_compile=True`: the step function is traced once
  although batch widths vary (XLA compiles once per width, a multiple of 8: at most seq_length/8).
* `mixed_bfloat16`: the real MiniLM classifier's probabilities stay close to float32's, and the
  policy is applied whether or not the CPU computes bf16 natively (that is only logged).
"""

import os

import numpy as np
import pytest
import tensorflow as tf

import bert_tf
from bert_tf.tasks.classification import data as glue
from bert_tf.tasks import SentencePredictionTask
from fixtures import datasets

SEQ = 128


def _classifier(encoder, num_classes=3):
    model = bert_tf.BertClassifier(encoder, num_classes=num_classes)
    model.build()
    return model


@pytest.fixture(scope="module")
def sentences():
    return datasets.real_sentences(64)


@pytest.fixture(scope="module")
def minilm_classifier(minilm_dir):
    import keras

    keras.utils.set_random_seed(0)
    pre = bert_tf.from_pretrained(minilm_dir)
    return _classifier(pre.encoder), pre.vocab_file


def test_dynamic_padding_gives_the_fixed_length_logits(minilm_classifier, sentences):
    model, vocab = minilm_classifier
    fixed = bert_tf.BertPreprocessor(vocab, seq_length=SEQ)
    dynamic = bert_tf.BertPreprocessor(vocab, seq_length=SEQ, dynamic_padding=True)
    for i in range(0, len(sentences), 16):
        batch = tf.constant(sentences[i:i + 16])
        short = dynamic(batch)
        longest = int(short["input_mask"].numpy().sum(1).max())
        width = short["input_word_ids"].shape[1]
        assert width == min(SEQ, -(-longest // 8) * 8) < SEQ
        np.testing.assert_allclose(model(short).numpy(), model(fixed(batch)).numpy(), atol=2e-5)


def test_export_pads_each_request_to_its_longest(minilm_classifier, sentences, tmp_path):
    from bert_tf.tasks.classification.model import BertClassifier
    from bert_tf.tasks.classification.export import export_classifier

    model, vocab = minilm_classifier
    pre = bert_tf.BertPreprocessor(vocab, seq_length=SEQ)
    clf = BertClassifier(model.encoder, pre, num_classes=3, labels=["a", "b", "c"])
    clf(pre(tf.constant(sentences[:2])))
    clf.head.set_weights(model.head.get_weights())
    export_dir = export_classifier(clf, str(tmp_path / "m"), task="throughput")
    loaded = tf.saved_model.load(export_dir)
    short, long_ = sentences[:4], sentences[:4] + [" ".join(sentences[4:12])]
    lengths = pre(tf.constant(long_))["input_mask"].numpy().sum(1)
    assert lengths[-1] > 64 and lengths[:4].max() < 64
    out_short = loaded.signatures["encode"](text=tf.constant(short))
    out_long = loaded.signatures["encode"](text=tf.constant(long_))
    assert out_short["sequence_output"].shape[1] == -(-int(lengths[:4].max()) // 8) * 8
    assert out_long["sequence_output"].shape[1] == min(SEQ, -(-int(lengths.max()) // 8) * 8)
    # The short request's results do not depend on what else could have been padded in.
    np.testing.assert_allclose(out_short["pooled_output"].numpy(), out_long["pooled_output"].numpy()[:4],
                               atol=2e-5)
    probs = loaded.signatures["serving_default"](text=tf.constant(short))["probabilities"].numpy()
    want = tf.nn.softmax(model(pre(tf.constant(short)))).numpy()
    np.testing.assert_allclose(probs, want, atol=1e-5)


def test_bucketed_training_under_xla_traces_the_step_once(minilm_vocab, tmp_path):
    import keras

    from bert_tf.training.optimization import create_optimizer
    from bert_tf.training import Trainer

    data_dir = datasets.tweets_task_dir(str(tmp_path / "tweets"), train_size=512, dev_size=8, test_size=8)
    task = SentencePredictionTask(glue.get_task("tsv", data_dir))
    examples = task.examples("train")
    keras.utils.set_random_seed(0)
    cfg = bert_tf.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=64, max_position_embeddings=SEQ)
    pre = bert_tf.BertPreprocessor(minilm_vocab, seq_length=SEQ, dynamic_padding=True)
    model = task.build_model(bert_tf.BertEncoder(cfg), pre)
    ds = task.build_train_dataset(model, examples, batch_size=8, seed=0, bucket_window=8)
    widths = [int(f["input_word_ids"].shape[1]) for f, _ in ds.take(24)]
    assert len(set(widths)) >= 3 and all(w % 8 == 0 for w in widths), widths

    steps = 24
    trainer = Trainer(model, create_optimizer("adamw", 1e-3, steps, 2, bias_correction=True),
                      task.compute_loss, model_dir=str(tmp_path / "run"), num_train_steps=steps,
                      steps_per_loop=8, save_checkpoints_steps=None, global_batch_size=8, jit_compile=True,
                      checkpoint_dataset_iterator=False, print_fn=lambda s: None)
    result = trainer.train(ds)
    assert result.global_step == steps and np.isfinite(result.loss)
    # One trace of the per-replica step for all widths (its input spec has a None length);
    # XLA then compiles once per distinct width, and widths are bucketed to multiples of 8.
    assert trainer._grad_fn.experimental_get_tracing_count() == 1
    assert trainer._loop_fn.experimental_get_tracing_count() == 1


def test_mixed_bfloat16_classifier_stays_close_to_float32(minilm_dir, sentences):
    import keras

    from bert_tf.training import distribute

    pre = bert_tf.BertPreprocessor(os.path.join(minilm_dir, "vocab.txt"), seq_length=SEQ, dynamic_padding=True)
    batch = pre(tf.constant(sentences[:32]))
    keras.utils.set_random_seed(0)
    f32 = _classifier(bert_tf.from_pretrained(minilm_dir).encoder)
    head = f32.head.get_weights()
    want = tf.nn.softmax(f32(batch)).numpy()
    try:
        distribute.configure_mixed_precision("mixed_bfloat16")
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
        bf16 = _classifier(bert_tf.from_pretrained(minilm_dir).encoder)
        bf16.head.set_weights(head)
        assert bf16.encoder.embedding_table.dtype == "float32"  # variables stay float32
        out = bf16(batch)
    finally:
        distribute.configure_mixed_precision("float32")
    got = tf.nn.softmax(tf.cast(out, tf.float32)).numpy()
    # bf16 keeps 8 bits of mantissa: probabilities agree to about 1e-2, predictions nearly always.
    assert np.abs(got - want).max() < 0.03
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.9


def test_native_bf16_detection_reads_cpu_flags():
    from bert_tf.training.distribute import cpu_has_native_bf16

    assert cpu_has_native_bf16({"avx512f", "avx512_bf16"})
    assert cpu_has_native_bf16({"amx_bf16", "amx_tile"})
    assert not cpu_has_native_bf16({"avx2", "avx512f", "fma"})
    flags = open("/proc/cpuinfo").read().split() if os.path.exists("/proc/cpuinfo") else []
    assert cpu_has_native_bf16() == ("avx512_bf16" in flags or "amx_bf16" in flags)
