"""BertEncoder on tiny configs, against Hugging Face's PyTorch BertModel as the reference."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import torch
import transformers

from bert_tf import BertConfig, BertEncoder
from bert_tf.model.checkpoints import hf_name_to_google, set_encoder_weights
from bert_tf.model.layers import activation_fn

TINY = dict(vocab_size=97, hidden_size=24, num_hidden_layers=2, num_attention_heads=3,
            intermediate_size=40, max_position_embeddings=32)


def _inputs(batch=3, length=10, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, TINY["vocab_size"], size=(batch, length)).astype("int32")
    lengths = [length] + list(rng.integers(1, length + 1, size=batch - 1))
    mask = (np.arange(length)[None, :] < np.array(lengths)[:, None]).astype("int32")
    ids[mask == 0] = 0
    types = np.zeros_like(ids)
    types[0, length // 2:] = 1
    return {"input_word_ids": ids, "input_mask": mask, "input_type_ids": types}


def _hf_pair(hidden_act_ours, hidden_act_hf):
    torch.manual_seed(0)
    hf = transformers.BertModel(transformers.BertConfig(**TINY, hidden_act=hidden_act_hf)).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    enc = BertEncoder(BertConfig(**TINY, hidden_act=hidden_act_ours))
    weights = {}
    for k, v in hf.state_dict().items():
        m = hf_name_to_google(k)
        if m:
            weights[m[0]] = v.numpy().T if m[1] else v.numpy()
    assert set_encoder_weights(enc, weights) == {}
    return enc, hf


def _torch(hf, x):
    with torch.no_grad():
        r = hf(input_ids=torch.tensor(x["input_word_ids"], dtype=torch.long),
               attention_mask=torch.tensor(x["input_mask"], dtype=torch.long),
               token_type_ids=torch.tensor(x["input_type_ids"], dtype=torch.long),
               output_hidden_states=True)
    return r


@pytest.mark.parametrize("ours,theirs", [("gelu", "gelu"), ("gelu_tanh", "gelu_pytorch_tanh"), ("relu", "relu")])
def test_matches_transformers(ours, theirs):
    enc, hf = _hf_pair(ours, theirs)
    x = _inputs()
    r = _torch(hf, x)
    out = enc(x)
    np.testing.assert_allclose(out["sequence_output"].numpy(), r.last_hidden_state.numpy(), atol=2e-5)
    np.testing.assert_allclose(out["pooled_output"].numpy(), r.pooler_output.numpy(), atol=2e-5)
    assert len(out["encoder_outputs"]) == TINY["num_hidden_layers"]
    for mine, ref in zip(out["encoder_outputs"], r.hidden_states[1:]):
        np.testing.assert_allclose(mine.numpy(), ref.numpy(), atol=2e-5)
    # Under XLA as well.
    xla = tf.function(enc, jit_compile=True)(x)
    np.testing.assert_allclose(xla["sequence_output"].numpy(), r.last_hidden_state.numpy(), atol=2e-5)


def test_gelu_variants_match_torch():
    x = np.linspace(-6, 6, 1001).astype("float32")
    t = torch.tensor(x)
    np.testing.assert_allclose(activation_fn("gelu")(x).numpy(),
                               torch.nn.functional.gelu(t, approximate="none").numpy(), atol=1e-6)
    np.testing.assert_allclose(activation_fn("gelu_tanh")(x).numpy(),
                               torch.nn.functional.gelu(t, approximate="tanh").numpy(), atol=1e-6)
    assert np.abs(activation_fn("gelu")(x).numpy() - activation_fn("gelu_tanh")(x).numpy()).max() > 1e-4


def test_padding_is_masked_and_any_length():
    enc = BertEncoder(BertConfig(**TINY))
    x = _inputs(length=7)
    base = enc(x)["sequence_output"].numpy()
    for extra in (1, 9, TINY["max_position_embeddings"] - 7):  # longer padding, up to max positions
        padded = {k: np.pad(v, [(0, 0), (0, extra)]) for k, v in x.items()}
        out = enc(padded)["sequence_output"].numpy()
        m = x["input_mask"].astype(bool)
        np.testing.assert_allclose(out[:, :7][m], base[m], atol=1e-5)
    # Changing ids under padding changes nothing at real positions.
    noisy = dict(x)
    noisy["input_word_ids"] = np.where(x["input_mask"] == 1, x["input_word_ids"], 42).astype("int32")
    out = enc(noisy)["sequence_output"].numpy()
    np.testing.assert_allclose(out[x["input_mask"].astype(bool)], base[x["input_mask"].astype(bool)], atol=1e-5)
    assert enc(_inputs(batch=2, length=1))["pooled_output"].shape == (2, TINY["hidden_size"])


def test_dropout_only_in_training_and_gradients():
    enc = BertEncoder(BertConfig(**TINY))
    x = _inputs()
    a, b = enc(x)["sequence_output"].numpy(), enc(x, training=False)["sequence_output"].numpy()
    np.testing.assert_array_equal(a, b)
    t1 = enc(x, training=True)["sequence_output"].numpy()
    t2 = enc(x, training=True)["sequence_output"].numpy()
    assert not np.allclose(t1, a) and not np.allclose(t1, t2)
    with tf.GradientTape() as tape:
        out = enc(x, training=True)
        loss = tf.reduce_sum(out["pooled_output"] ** 2) + tf.reduce_sum(out["sequence_output"] ** 2)
    grads = tape.gradient(loss, enc.trainable_variables)
    assert all(g is not None for g in grads)
    assert len(enc.trainable_variables) == 5 + 12 * TINY["num_hidden_layers"] + 2


def test_init_truncated_normal_and_embedding_table():
    cfg = BertConfig(**dict(TINY, vocab_size=2000), initializer_range=0.05)
    enc = BertEncoder(cfg)
    table = enc.embedding_table
    assert tuple(table.shape) == (2000, TINY["hidden_size"])
    assert any(table is v for v in enc.trainable_variables)
    values = table.numpy()
    assert np.abs(values).max() <= 2 * 0.05 + 1e-6
    assert 0.035 < values.std() < 0.05  # truncated at 2 stddev: std ~ 0.88 * 0.05
    blk = enc.transformer_layers[0]
    assert np.all(blk.qkv_bias.numpy() == 0) and np.all(blk.output_norm_gamma.numpy() == 1)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(policy):
    ref = BertEncoder(BertConfig(**TINY))
    x = _inputs()
    expected = ref(x)
    old = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        enc = BertEncoder(BertConfig(**TINY))
    finally:
        keras.config.set_dtype_policy(old)
    enc.set_weights(ref.get_weights())
    assert all(v.dtype == "float32" for v in enc.weights)
    for out in (enc(x), tf.function(enc, jit_compile=True)(x), enc(x, training=True)):
        assert out["sequence_output"].dtype == tf.float32 and out["pooled_output"].dtype == tf.float32
        assert all(o.dtype == tf.float32 for o in out["encoder_outputs"])
    out = enc(x)
    tol = 0.02 if policy == "mixed_float16" else 0.1
    assert np.abs(out["sequence_output"].numpy() - expected["sequence_output"].numpy()).max() < tol
    # explicit dtype argument works too
    assert BertEncoder(BertConfig(**TINY), dtype=policy)(x)["sequence_output"].dtype == tf.float32


def test_get_config_round_trip():
    cfg = BertConfig(**TINY, hidden_act="gelu_tanh", hidden_dropout_prob=0.2)
    enc = BertEncoder(cfg)
    conf = enc.get_config()
    clone = BertEncoder.from_config(conf)
    assert clone.config == cfg and clone.get_config() == conf
    clone2 = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(enc))
    assert isinstance(clone2, BertEncoder) and clone2.config == cfg
    assert BertEncoder(cfg.to_dict()).config == cfg
    with pytest.raises(TypeError):
        BertEncoder("bert-base")


def test_mean_pool_matches_sentence_transformers_formula():
    from bert_tf.model.encoder import mean_pool

    rng = np.random.default_rng(1)
    seq = rng.normal(size=(3, 6, 5)).astype("float32")
    mask = np.array([[1] * 6, [1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]])
    t, m = torch.tensor(seq), torch.tensor(mask).unsqueeze(-1).float()
    ref = (torch.sum(t * m, 1) / torch.clamp(m.sum(1), min=1e-9)).numpy()
    np.testing.assert_allclose(mean_pool(seq, mask).numpy(), ref, atol=1e-6)
