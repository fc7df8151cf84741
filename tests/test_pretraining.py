"""Pretraining heads, losses and weights vs Hugging Face / PyTorch, and a real-text run.

References: `transformers.BertForPreTraining` (heads, numerically), PyTorch's
cross-entropy (Google's weighted MLM loss and NSP loss), TF's checkpoint reader
(Google variable names). The training test pretrains a tiny BERT with the real
MiniLM vocab on DATA's real English corpus.
"""

import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

import bert_tf
from bert_tf import BertConfig, BertEncoder
from bert_tf.pretraining.pretrainer import BertPretrainer, HEAD_NAMES, pretraining_loss
from bert_tf.training.losses import sparse_softmax_cross_entropy

L, P = 16, 4


def _inputs(vocab_size, batch=3, seed=0):
    rng = np.random.RandomState(seed)
    ids = rng.randint(5, vocab_size, (batch, L)).astype("int32")
    mask = np.ones((batch, L), "int32")
    mask[0, L - 5:] = 0
    types = np.zeros((batch, L), "int32")
    types[:, L // 2:] = 1
    pos = np.sort(rng.choice(np.arange(1, L - 5), (batch, P)), axis=1).astype("int32")
    return {"input_word_ids": ids, "input_mask": mask, "input_type_ids": types, "masked_lm_positions": pos}


@pytest.fixture(scope="module")
def hf_pretraining_dir(minilm_vocab, tmp_path_factory):
    """A random tiny HF BertForPreTraining with heads, saved as safetensors + the real vocab."""
    import torch
    from transformers import BertConfig as HFConfig
    from transformers import BertForPreTraining

    torch.manual_seed(0)
    cfg = HFConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                   intermediate_size=64, max_position_embeddings=64, hidden_act="gelu")
    model = BertForPreTraining(cfg).eval()
    with torch.no_grad():  # non-trivial head values
        for name, p in model.named_parameters():
            if name.startswith("cls.") and p.dim() == 1:
                p.normal_(0, 0.5)
    d = tmp_path_factory.mktemp("hf")
    model.save_pretrained(str(d))
    shutil.copyfile(minilm_vocab, d / "vocab.txt")
    return str(d), model


def test_heads_match_hugging_face_bert_for_pretraining(hf_pretraining_dir):
    import torch

    path, hf = hf_pretraining_dir
    pre = bert_tf.from_pretrained(path)
    model = BertPretrainer(pre.encoder)
    x = _inputs(30522)
    model(x)
    loaded = model.load_head_weights(pre.extra_weights, strict=True, source=path)
    assert sorted(loaded) == sorted(HEAD_NAMES)
    out = model(x)
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(x["input_word_ids"], dtype=torch.long),
                 attention_mask=torch.tensor(x["input_mask"], dtype=torch.long),
                 token_type_ids=torch.tensor(x["input_type_ids"], dtype=torch.long))
    want_mlm = np.take_along_axis(ref.prediction_logits.numpy(), x["masked_lm_positions"][:, :, None], 1)
    np.testing.assert_allclose(out["mlm_logits"].numpy(), want_mlm, atol=2e-4, rtol=1e-4)
    np.testing.assert_allclose(out["nsp_logits"].numpy(), ref.seq_relationship_logits.numpy(),
                               atol=2e-4, rtol=1e-4)


def test_losses_and_metrics_match_torch():
    import torch
    import torch.nn.functional as F

    rng = np.random.RandomState(1)
    mlm = rng.randn(4, 5, 50).astype("float32")
    nsp = rng.randn(4, 2).astype("float32")
    ids = rng.randint(0, 50, (4, 5))
    w = (rng.rand(4, 5) > 0.3).astype("float32")
    nsl = rng.randint(0, 2, (4, 1))
    loss, m = pretraining_loss(
        {"masked_lm_ids": ids, "masked_lm_weights": w, "next_sentence_labels": nsl},
        {"mlm_logits": mlm, "nsp_logits": nsp})
    nll = F.cross_entropy(torch.tensor(mlm).reshape(-1, 50), torch.tensor(ids).reshape(-1),
                          reduction="none").numpy()
    want_mlm = (nll * w.reshape(-1)).sum() / (w.sum() + 1e-5)  # Google's weighted mean
    want_nsp = F.cross_entropy(torch.tensor(nsp), torch.tensor(nsl[:, 0])).item()
    np.testing.assert_allclose(float(m["mlm_loss"]), want_mlm, rtol=1e-5)
    np.testing.assert_allclose(float(m["nsp_loss"]), want_nsp, rtol=1e-5)
    np.testing.assert_allclose(float(loss), want_mlm + want_nsp, rtol=1e-5)
    acc = ((mlm.argmax(-1) == ids) * w).sum() / w.sum()
    np.testing.assert_allclose(float(m["mlm_accuracy"]), acc, rtol=1e-4)
    np.testing.assert_allclose(float(m["nsp_accuracy"]), (nsp.argmax(-1) == nsl[:, 0]).mean())


def test_mlm_cross_entropy_and_its_gradient_match_tensorflows_fused_op():
    rng = np.random.RandomState(5)
    logits = tf.constant(rng.randn(2, 20, 30522).astype("float32") * 4.0)  # gaps of ~30 between logits
    labels = tf.constant(rng.randint(0, 30522, (2, 20)))
    upstream = tf.constant(rng.rand(2, 20).astype("float32"))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(logits)
        ours = sparse_softmax_cross_entropy(labels, logits)
        want = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        ours_total, want_total = tf.reduce_sum(ours * upstream), tf.reduce_sum(want * upstream)
    np.testing.assert_allclose(ours.numpy(), want.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(tape.gradient(ours_total, logits).numpy(), tape.gradient(want_total, logits).numpy(),
                               rtol=1e-5, atol=1e-7)
    # A label whose probability underflows float32: the loss is capped at -log(tiny), the gradient stays exact.
    far = tf.constant([[0.0, 200.0, 1.0]])
    with tf.GradientTape() as tape:
        tape.watch(far)
        capped = sparse_softmax_cross_entropy(tf.constant([0]), far)
    assert 87.0 < float(capped[0]) < 88.0
    np.testing.assert_allclose(tape.gradient(capped, far).numpy(), [[-1.0, 1.0, 0.0]], atol=1e-6)


def _tiny(vocab_size=30522):
    return BertConfig(vocab_size=vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=32, max_position_embeddings=32, type_vocab_size=2)


def test_output_projection_is_tied_to_word_embeddings():
    model = BertPretrainer(BertEncoder(_tiny(100)))
    x = _inputs(100)
    model(x)
    table = model.encoder.embedding_table
    assert sum(v is table for v in model.trainable_variables) == 1
    assert len({id(v) for v in model.trainable_variables}) == len(model.trainable_variables)
    labels = {"masked_lm_ids": np.full((3, P), 7), "masked_lm_weights": np.ones((3, P), "float32"),
              "next_sentence_labels": np.zeros((3, 1))}
    with tf.GradientTape() as tape:
        _, m = pretraining_loss(labels, model(x))
    g = tf.convert_to_tensor(tape.gradient(m["mlm_loss"], table)).numpy()
    assert np.abs(g[7]).sum() > 0  # the label row gets gradient through the output layer
    before = model(x)["mlm_logits"].numpy()
    table.assign(table.numpy() * 2.0)
    assert not np.allclose(model(x)["mlm_logits"].numpy(), before)


@pytest.mark.parametrize("next_sentence", [True, False])
def test_last_layer_on_masked_positions_only_gives_the_whole_sequence_loss_and_gradients(next_sentence):
    """BertPretrainer runs its last layer on the masked positions (and [CLS]) only: same loss and gradients
    as the whole sequence output gathered at those positions (padding positions 0 repeated, a padded row)."""
    cfg = BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=32, type_vocab_size=2)
    model = BertPretrainer(BertEncoder(cfg), next_sentence=next_sentence)
    x = _inputs(120, seed=3)
    x["masked_lm_positions"][2, 2:] = 0  # Google pads the positions with 0 (weight 0)
    rng = np.random.RandomState(4)
    labels = {"masked_lm_ids": rng.randint(5, 120, (3, P)), "masked_lm_weights": np.ones((3, P), "float32"),
              "next_sentence_labels": np.array([0, 1, 0])}
    labels["masked_lm_weights"][2, 2:] = 0

    def whole_sequence():
        enc = model.encoder(model.encoder_inputs(x))
        rows = tf.gather(enc["sequence_output"], x["masked_lm_positions"], batch_dims=1)
        out = {"mlm_logits": model._mlm_logits(rows)}
        if next_sentence:
            out["nsp_logits"] = tf.cast(model.nsp_head(enc["pooled_output"]), tf.float32)
        return out

    with tf.GradientTape(persistent=True) as tape:
        ours, _ = pretraining_loss(labels, model(x))
        want, _ = pretraining_loss(labels, whole_sequence())
    np.testing.assert_allclose(float(ours), float(want), rtol=1e-6)
    variables = model.trainable_variables
    for v, g, w in zip(variables, tape.gradient(ours, variables), tape.gradient(want, variables)):
        assert (g is None) == (w is None), v.path  # MLM only: the pooler has no gradient either way
        if g is not None:
            np.testing.assert_allclose(tf.convert_to_tensor(g).numpy(), tf.convert_to_tensor(w).numpy(),
                                       atol=1e-6, err_msg=v.path)
    assert sum(g is None for g in tape.gradient(ours, variables)) == (0 if next_sentence else 2)


def test_heads_written_and_read_back_with_google_names(minilm_vocab, tmp_path):
    model = BertPretrainer(BertEncoder(_tiny()))
    x = _inputs(30522)
    model(x)
    for v in model.mlm_head.weights + model.nsp_head.weights:  # non-default values
        v.assign(np.random.RandomState(2).randn(*v.shape).astype("float32") * 0.1)
    heads = model.head_weights()
    assert heads["cls/seq_relationship/output_weights"].shape == (2, 16)
    assert heads["cls/predictions/transform/dense/kernel"].shape == (16, 16)
    assert heads["cls/predictions/output_bias"].shape == (30522,)
    want = model(x)
    # bert_tf format
    bert_tf.save_pretrained(model.encoder, str(tmp_path / "ours"), minilm_vocab, extra_weights=heads)
    # Google TF1 format
    prefix = bert_tf.save_tf1_checkpoint(model.encoder, str(tmp_path / "g" / "bert_model.ckpt"),
                                         extra_weights=heads, vocab_file=minilm_vocab)
    names = dict(tf.train.list_variables(prefix))
    for n in HEAD_NAMES:
        assert tuple(names[n]) == heads[n].shape, n
    reader = tf.train.load_checkpoint(prefix)
    np.testing.assert_array_equal(reader.get_tensor("cls/seq_relationship/output_weights"),
                                  heads["cls/seq_relationship/output_weights"])
    for src in (str(tmp_path / "ours"), str(tmp_path / "g")):
        pre = bert_tf.from_pretrained(src)
        again = BertPretrainer(pre.encoder)
        again(x)
        again.load_head_weights(pre.extra_weights, strict=True)
        got = again(x)
        for k in ("mlm_logits", "nsp_logits"):
            np.testing.assert_allclose(got[k].numpy(), want[k].numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="cls/predictions/output_bias"):
        again.load_head_weights({"cls/predictions/output_bias": np.zeros(5)}, source="x")


@pytest.mark.slow  # ~4 minutes on 2 CPU cores: the output layer over the 30,522-piece vocab dominates
def test_pretraining_on_real_text_beats_unigram_baseline(minilm_vocab, tmp_path):
    """A tiny BERT (hidden 128, 2 layers, 4 heads, seq 64, the real 30,522-piece MiniLM
    vocab) trained with the shared Trainer on DATA's real corpus with dynamic masking
    (fresh 80/10/10 masks every batch); held-out documents' MLM loss (static masks, as
    create_pretraining_data writes them) must end well below the unigram baseline: the
    cross-entropy of the held-out masked tokens under the training tokens' unigram
    distribution.

    Measured (2-core CPU, 1,000 steps of 32): held-out MLM loss 6.97 nats against a unigram
    baseline of 7.39 (0.43 below; the assertion asks for 0.3), MLM accuracy 0.12 (the unigram
    model's 0.06).
    Small models sit on the unigram plateau first (7.39-7.44 nats up to ~600 steps
    here) and leave it when attention learns to use the context. Two settings matter at
    this scale: Adam's bias correction (Google's AdamWeightDecay has none; with a short
    warmup its early steps are several times too large and a 2-layer model stays on the
    plateau) and fresh masks (static masks over a small corpus are memorized: the
    training loss falls while the held-out loss does not).
    """
    from fixtures import datasets
    from bert_tf.pretraining import data as pdata
    from bert_tf.pretraining.masking import DynamicMasker
    from bert_tf.training.optimization import create_optimizer
    from bert_tf.pretraining.pretrainer import compute_loss, pretraining_dataset
    from bert_tf.training import Trainer

    seq, pred = 64, 10
    text = open(datasets.pretraining_corpus_file(), encoding="utf-8").read()
    docs = [d for d in text.split("\n\n") if d.strip()]
    held = set(np.random.RandomState(0).permutation(len(docs))[:40].tolist())
    (tmp_path / "train.txt").write_text("\n\n".join(d for i, d in enumerate(docs) if i not in held) + "\n")
    (tmp_path / "eval.txt").write_text("\n\n".join(d for i, d in enumerate(docs) if i in held) + "\n")
    for name in ("train", "eval"):
        pdata.create_pretraining_data([str(tmp_path / f"{name}.txt")], [str(tmp_path / f"{name}.tfrecord")],
                                      minilm_vocab, max_seq_length=seq, max_predictions_per_seq=pred,
                                      dupe_factor=1, verbose=False)
    # unigram baseline from the training records' (unmasked) tokens
    counts = np.ones(30522)
    for b in pretraining_dataset(str(tmp_path / "train.tfrecord"), 2048, seq, pred, is_training=False):
        ids = b["input_ids"].numpy()
        w = b["masked_lm_weights"].numpy() > 0
        rows = np.nonzero(w)[0]
        ids[rows, b["masked_lm_positions"].numpy()[w]] = b["masked_lm_ids"].numpy()[w]
        np.add.at(counts, ids[b["input_mask"].numpy() > 0], 1)
    log_unigram = np.log(counts / counts.sum())

    keras.utils.set_random_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=512, max_position_embeddings=seq, type_vocab_size=2)
    model = BertPretrainer(BertEncoder(cfg))
    model(_inputs(30522) | {"masked_lm_positions": np.zeros((3, pred), "int32")})
    opt = create_optimizer("adamw", LR, STEPS, STEPS // 10, bias_correction=True)
    trainer = Trainer(model, opt, compute_loss, model_dir=str(tmp_path / "run"), num_train_steps=STEPS,
                      steps_per_loop=100, save_checkpoints_steps=STEPS, global_batch_size=BATCH,
                      print_fn=print)
    masker = DynamicMasker.from_vocab_file(minilm_vocab, max_predictions_per_seq=pred, seed=1)
    trainer.train(pretraining_dataset(str(tmp_path / "train.tfrecord"), BATCH, seq, pred, seed=1,
                                      masker=masker))

    nll_sum = uni_sum = n = 0.0
    for b in pretraining_dataset(str(tmp_path / "eval.tfrecord"), 512, seq, pred, is_training=False):
        out = model(b)
        w = b["masked_lm_weights"].numpy()
        nll = keras.losses.sparse_categorical_crossentropy(b["masked_lm_ids"], out["mlm_logits"],
                                                           from_logits=True).numpy()
        nll_sum += (nll * w).sum()
        uni_sum += (-log_unigram[b["masked_lm_ids"].numpy()] * w).sum()
        n += w.sum()
    held_out, unigram = nll_sum / n, uni_sum / n
    print(f"held-out MLM loss {held_out:.3f} nats vs unigram baseline {unigram:.3f} ({int(n)} predictions)")
    assert n > 5000
    assert held_out < unigram - MARGIN, (held_out, unigram)


STEPS, LR, BATCH, MARGIN = 1000, 2e-3, 32, 0.3


def test_head_warmup_trains_the_heads_alone_then_unfreezes(tmp_path):
    from bert_tf.pretraining.head_warmup import missing_heads, warm_up_heads
    from bert_tf.pretraining.pretrainer import compute_loss
    from bert_tf.training.optimization import create_optimizer

    model = BertPretrainer(BertEncoder(_tiny(100)))
    x = _inputs(100, batch=4)
    model(x)
    assert missing_heads(model, []) == list(model.head_weights())
    assert missing_heads(model, HEAD_NAMES[:2]) == [n for n in model.head_weights() if n not in HEAD_NAMES[:2]]
    batch = dict(x, masked_lm_ids=np.full((4, P), 7, "int32"), masked_lm_weights=np.ones((4, P), "float32"),
                 next_sentence_labels=np.zeros((4, 1), "int32"))
    ds = tf.data.Dataset.from_tensors(batch).repeat()
    encoder_before = [v.numpy().copy() for v in model.encoder.weights]
    heads_before = model.head_weights()
    result = warm_up_heads(model, create_optimizer("adamw", 1e-2, 6, 1, bias_correction=True), compute_loss,
                           str(tmp_path / "warmup"), 6, train_dataset=ds, steps_per_loop=3,
                           save_checkpoints_steps=3, print_fn=lambda s: None)
    assert result.global_step == 6 and tf.train.latest_checkpoint(str(tmp_path / "warmup")).endswith("ckpt-6")
    for before, v in zip(encoder_before, model.encoder.weights):  # the tied word embeddings included
        np.testing.assert_array_equal(v.numpy(), before, err_msg=v.path)
    for name, value in model.head_weights().items():
        assert not np.allclose(value, heads_before[name]), name
    assert model.encoder.trainable and len(model.trainable_variables) > len(model.head_weights())
    with pytest.raises(ValueError, match="positive"):
        warm_up_heads(model, None, compute_loss, str(tmp_path / "none"), 0, train_dataset=ds)


def test_mixed_bfloat16_pretrainer_matches_float32_and_trains():
    """`pretrain.py --mixed_precision=mixed_bfloat16` (1.4x the float32 step on an AVX512-BF16 CPU,
    bench/pretrain.py): the same weights give the float32 losses to bfloat16's rounding, the logits and
    gradients are float32, and a few AdamW steps lower the loss as in float32."""
    cfg = _tiny(100)
    x = _inputs(100)
    labels = {"masked_lm_ids": np.random.RandomState(1).randint(5, 100, (3, P)),
              "masked_lm_weights": np.ones((3, P), "float32"), "next_sentence_labels": np.array([[0], [1], [0]])}
    ref = BertPretrainer(BertEncoder(cfg))
    ref(x)
    old = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = BertPretrainer(BertEncoder(cfg))
        model(x)
    finally:
        keras.config.set_dtype_policy(old)
    model.set_weights(ref.get_weights())
    assert model.encoder.transformer_layers[0].compute_dtype == "bfloat16"
    assert all(v.dtype == "float32" for v in model.weights)

    def losses(m, steps):
        opt = keras.optimizers.AdamW(1e-2)
        out = []
        for _ in range(steps):
            with tf.GradientTape() as tape:
                outputs = m(x)
                loss, _ = pretraining_loss(labels, outputs)
            grads = tape.gradient(loss, m.trainable_variables)
            assert outputs["mlm_logits"].dtype == tf.float32 and outputs["nsp_logits"].dtype == tf.float32
            assert all(g is None or g.dtype == tf.float32 for g in grads)
            opt.apply_gradients([(g, v) for g, v in zip(grads, m.trainable_variables) if g is not None])
            out.append(float(loss))
        return np.array(out)

    ref_losses, bf16_losses = losses(ref, 10), losses(model, 10)
    assert abs(bf16_losses[0] - ref_losses[0]) < 0.01 * ref_losses[0]
    assert np.all(np.isfinite(bf16_losses)) and bf16_losses[-1] < 0.8 * bf16_losses[0]
    assert np.abs(bf16_losses - ref_losses).max() < 0.03 * ref_losses[0]  # seen: 0.1%
