"""Checkpoints: real MiniLM weights vs Hugging Face's PyTorch BertModel, Google TF1 format,
our TF1 export, save_pretrained round trip, HF name variants, and clear errors."""

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
import torch
import transformers
from safetensors.numpy import load_file, save_file

import bert_tf
from bert_tf.model import checkpoints
from bert_tf.model.checkpoints import CheckpointError
from fixtures.datasets import real_sentences

TOL = 1e-4


# --------------------------------------------------------------------------- fixtures


def _hf_to_google_reference(name):
    """Hugging Face -> Google TF1 name, written out independently of bert_tf (test oracle)."""
    n = name
    if n == "embeddings.position_ids":
        return None, False
    if n.startswith("embeddings."):
        table = {
            "embeddings.word_embeddings.weight": "bert/embeddings/word_embeddings",
            "embeddings.position_embeddings.weight": "bert/embeddings/position_embeddings",
            "embeddings.token_type_embeddings.weight": "bert/embeddings/token_type_embeddings",
            "embeddings.LayerNorm.weight": "bert/embeddings/LayerNorm/gamma",
            "embeddings.LayerNorm.bias": "bert/embeddings/LayerNorm/beta",
        }
        return table[n], False
    if n.startswith("pooler.dense."):
        return ("bert/pooler/dense/kernel", True) if n.endswith("weight") else ("bert/pooler/dense/bias", False)
    _, _, idx, *rest = n.split(".")
    module, leaf = "/".join(rest[:-1]), rest[-1]
    g = f"bert/encoder/layer_{idx}/{module}/"
    if module.endswith("LayerNorm"):
        return g + {"weight": "gamma", "bias": "beta"}[leaf], False
    return g + {"weight": "kernel", "bias": "bias"}[leaf], leaf == "weight"


@pytest.fixture(scope="module")
def hf_state(minilm_dir):
    return load_file(os.path.join(minilm_dir, "model.safetensors"))


@pytest.fixture(scope="module")
def google_weights(hf_state):
    out = {}
    for k, v in hf_state.items():
        g, transpose = _hf_to_google_reference(k)
        if g is not None:
            out[g] = np.ascontiguousarray(v.T if transpose else v)
    return out


@pytest.fixture(scope="module")
def pretrained(minilm_dir):
    return bert_tf.from_pretrained(minilm_dir)


@pytest.fixture(scope="module")
def hf_model(minilm_dir):
    return transformers.BertModel.from_pretrained(minilm_dir).eval()


@pytest.fixture(scope="module")
def batches(minilm_dir, minilm_vocab):
    """Padded batches of real sentences (singles and pairs), token ids from HF's tokenizer."""
    tok = transformers.BertTokenizerFast.from_pretrained(minilm_dir)
    sents = [s for s in real_sentences(600) if 20 <= len(s) <= 300]
    assert len(sents) >= 120
    singles = sents[:64]
    pairs = list(zip(sents[64:96], sents[96:128]))
    pre = bert_tf.BertPreprocessor(minilm_vocab, lower_case=True, seq_length=128)
    out = []
    for start in range(0, len(singles), 16):
        chunk = singles[start:start + 16]
        out.append(("single", chunk, tok(chunk, padding="max_length", max_length=128, truncation=True,
                                        return_tensors="np"), pre(tf.constant(chunk))))
    for start in range(0, len(pairs), 16):
        a, b = zip(*pairs[start:start + 16])
        out.append(("pair", list(zip(a, b)),
                    tok(list(a), list(b), padding="max_length", max_length=128, truncation="longest_first",
                        return_tensors="np"),
                    pre([tf.constant(list(a)), tf.constant(list(b))])))
    return out


def _trimmed(enc):
    """Our inputs from HF's encoding, cut to the longest row of the batch (padded batch)."""
    width = int(enc["attention_mask"].sum(1).max())
    return {
        "input_word_ids": enc["input_ids"][:, :width].astype("int32"),
        "input_mask": enc["attention_mask"][:, :width].astype("int32"),
        "input_type_ids": enc["token_type_ids"][:, :width].astype("int32"),
    }


def _torch_outputs(model, inputs):
    with torch.no_grad():
        r = model(input_ids=torch.tensor(inputs["input_word_ids"], dtype=torch.long),
                  attention_mask=torch.tensor(inputs["input_mask"], dtype=torch.long),
                  token_type_ids=torch.tensor(inputs["input_type_ids"], dtype=torch.long))
    return r.last_hidden_state.numpy(), r.pooler_output.numpy()


def _assert_parity(encoder, ref_model, batches):
    worst = 0.0
    for _, _, enc, _ in batches:
        x = _trimmed(enc)
        ours = encoder(x)
        seq, pooled = _torch_outputs(ref_model, x)
        d_seq = np.abs(ours["sequence_output"].numpy() - seq).max()
        d_pool = np.abs(ours["pooled_output"].numpy() - pooled).max()
        worst = max(worst, d_seq, d_pool)
    assert worst < TOL, worst
    return worst


# --------------------------------------------------------------------------- real weights


def test_token_ids_equal_hugging_face(batches):
    n_texts = 0
    for kind, texts, enc, ours in batches:
        n_texts += len(texts)
        for key_hf, key_ours in (("input_ids", "input_word_ids"), ("attention_mask", "input_mask"),
                                 ("token_type_ids", "input_type_ids")):
            np.testing.assert_array_equal(ours[key_ours].numpy(), enc[key_hf], err_msg=f"{kind} {key_hf}")
    assert n_texts >= 96


def test_minilm_matches_transformers(pretrained, hf_model, batches, minilm_dir):
    assert pretrained.format == "huggingface"
    assert pretrained.lower_case is True
    assert pretrained.vocab_file == os.path.join(minilm_dir, "vocab.txt")
    assert pretrained.config.hidden_act == "gelu"  # HF "gelu" = exact erf
    assert pretrained.extra_weights == {}
    # Padded batches: rows of different lengths in one batch, singles and pairs.
    assert any(int(e["attention_mask"].sum(1).min()) < int(e["attention_mask"].sum(1).max())
               for _, _, e, _ in batches)
    _assert_parity(pretrained.encoder, hf_model, batches)


def test_minilm_jit_compiled_matches(pretrained, hf_model, batches):
    f = tf.function(pretrained.encoder, jit_compile=True)
    x = _trimmed(batches[-1][2])
    seq, pooled = _torch_outputs(hf_model, x)
    out = f(x)
    assert np.abs(out["sequence_output"].numpy() - seq).max() < TOL
    assert np.abs(out["pooled_output"].numpy() - pooled).max() < TOL


def _write_google_dir(path, weights, config_dict, extra):
    """A Google BERT dir written with tf.compat.v1 (graph + Saver), incl. optimizer slots."""
    os.makedirs(path)
    everything = dict(weights)
    everything.update(extra)
    # Adam slots and global_step as in Google's pre-training checkpoints: must be ignored.
    everything["bert/pooler/dense/kernel/adam_m"] = np.zeros_like(weights["bert/pooler/dense/kernel"])
    everything["bert/pooler/dense/kernel/adam_v"] = np.zeros_like(weights["bert/pooler/dense/kernel"])
    with tf.Graph().as_default():
        var_list = {n: tf.compat.v1.Variable(v, name=n.replace("/", "_")) for n, v in everything.items()}
        var_list["global_step"] = tf.compat.v1.Variable(np.int64(1000), name="global_step")
        saver = tf.compat.v1.train.Saver(var_list=var_list)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            saver.save(sess, os.path.join(path, "bert_model.ckpt"), write_meta_graph=False)
    with open(os.path.join(path, "bert_config.json"), "w") as f:
        json.dump(config_dict, f)


def _google_config(hf_config_path):
    with open(hf_config_path) as f:
        d = json.load(f)
    keys = ("attention_probs_dropout_prob", "hidden_act", "hidden_dropout_prob", "hidden_size",
            "initializer_range", "intermediate_size", "max_position_embeddings", "num_attention_heads",
            "num_hidden_layers", "type_vocab_size", "vocab_size")
    return {k: d[k] for k in keys}


def _heads(h, v, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "cls/predictions/transform/dense/kernel": rng.normal(size=(h, h)).astype("float32"),
        "cls/predictions/transform/dense/bias": rng.normal(size=(h,)).astype("float32"),
        "cls/predictions/transform/LayerNorm/gamma": rng.normal(size=(h,)).astype("float32"),
        "cls/predictions/transform/LayerNorm/beta": rng.normal(size=(h,)).astype("float32"),
        "cls/predictions/output_bias": rng.normal(size=(v,)).astype("float32"),
        "cls/seq_relationship/output_weights": rng.normal(size=(2, h)).astype("float32"),
        "cls/seq_relationship/output_bias": rng.normal(size=(2,)).astype("float32"),
    }


def test_google_checkpoint_loads_and_matches(tmp_path, google_weights, minilm_dir, batches):
    d = str(tmp_path / "uncased_L-6_H-384_A-12")
    heads = _heads(384, 30522)
    _write_google_dir(d, google_weights, _google_config(os.path.join(minilm_dir, "config.json")), heads)
    shutil.copyfile(os.path.join(minilm_dir, "vocab.txt"), os.path.join(d, "vocab.txt"))
    names = dict(tf.train.list_variables(os.path.join(d, "bert_model.ckpt")))
    assert "bert/encoder/layer_5/attention/self/query/kernel" in names and "global_step" in names

    p = bert_tf.from_pretrained(d)
    assert p.format == "google"
    assert p.config.hidden_act == "gelu_tanh"  # Google's "gelu" is the tanh approximation
    assert p.lower_case is True
    assert sorted(p.extra_weights) == sorted(heads)
    for k, v in heads.items():
        np.testing.assert_array_equal(p.extra_weights[k], v)
    # Reference: the same weights in transformers with the tanh GELU.
    ref = transformers.BertModel.from_pretrained(minilm_dir, hidden_act="gelu_pytorch_tanh").eval()
    _assert_parity(p.encoder, ref, batches[:2] + batches[-1:])


def test_tf1_export_reloads_exactly(tmp_path, pretrained, google_weights, minilm_vocab, batches):
    heads = _heads(384, 30522, seed=1)
    prefix = str(tmp_path / "export" / "bert_model.ckpt")
    bert_tf.save_tf1_checkpoint(pretrained.encoder, prefix, extra_weights=heads, vocab_file=minilm_vocab)
    # Plain Google names, Google shapes, read with TF's own checkpoint reader.
    listed = dict(tf.train.list_variables(prefix))
    assert set(listed) == set(google_weights) | set(heads)
    reader = tf.train.load_checkpoint(prefix)
    for name, value in google_weights.items():
        np.testing.assert_array_equal(reader.get_tensor(name), value, err_msg=name)
    with open(tmp_path / "export" / "bert_config.json") as f:
        assert json.load(f)["hidden_act"] == "gelu"
    p = bert_tf.from_pretrained(str(tmp_path / "export"))
    assert p.format == "google" and p.config == pretrained.config  # exact GELU variant kept
    for (v1, _), (v2, _) in zip(checkpoints.encoder_variable_map(p.encoder),
                                checkpoints.encoder_variable_map(pretrained.encoder)):
        np.testing.assert_array_equal(v1.numpy(), v2.numpy())
    assert sorted(p.extra_weights) == sorted(heads)
    x = _trimmed(batches[0][2])
    np.testing.assert_array_equal(p.encoder(x)["sequence_output"].numpy(),
                                  pretrained.encoder(x)["sequence_output"].numpy())


def test_save_pretrained_round_trip_exact(tmp_path, pretrained, minilm_vocab, batches):
    heads = _heads(384, 30522, seed=2)
    d = str(tmp_path / "ours")
    bert_tf.save_pretrained(pretrained.encoder, d, minilm_vocab, lower_case=True, extra_weights=heads)
    p = bert_tf.from_pretrained(d)
    assert p.format == "bert_tf" and p.config == pretrained.config and p.lower_case is True
    assert open(p.vocab_file).read() == open(minilm_vocab).read()
    for a, b in zip(p.encoder.weights, pretrained.encoder.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for k, v in heads.items():
        np.testing.assert_array_equal(p.extra_weights[k], v)
    x = _trimmed(batches[1][2])
    np.testing.assert_array_equal(p.encoder(x)["pooled_output"].numpy(),
                                  pretrained.encoder(x)["pooled_output"].numpy())


# --------------------------------------------------------------------------- HF variants (tiny)


TINY = dict(vocab_size=99, hidden_size=16, num_hidden_layers=2, num_attention_heads=4, intermediate_size=32,
            max_position_embeddings=40)


def _tiny_hf_pretraining_dir(path, vocab_words):
    torch.manual_seed(0)
    cfg = transformers.BertConfig(**TINY)
    model = transformers.BertForPreTraining(cfg).eval()
    with torch.no_grad():  # non-trivial LayerNorm parameters and biases
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(path)
    with open(os.path.join(path, "vocab.txt"), "w") as f:
        f.write("\n".join(vocab_words) + "\n")
    return model


def _vocab(n, cased=False):
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words += [("Tok%d" if cased and i % 7 == 0 else "tok%d") % i for i in range(n - len(words))]
    return words


def _tiny_inputs():
    rng = np.random.default_rng(0)
    ids = rng.integers(5, TINY["vocab_size"], size=(3, 9)).astype("int32")
    mask = np.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    ids[mask == 0] = 0
    types = np.zeros_like(ids)
    types[0, 5:] = 1
    return {"input_word_ids": ids, "input_mask": mask, "input_type_ids": types}


def _check_tiny(p, hf_bert):
    x = _tiny_inputs()
    seq, pooled = _torch_outputs(hf_bert, x)
    out = p.encoder(x)
    assert np.abs(out["sequence_output"].numpy() - seq).max() < 1e-5
    assert np.abs(out["pooled_output"].numpy() - pooled).max() < 1e-5


def test_hf_prefix_heads_gamma_beta_and_bin(tmp_path):
    d = str(tmp_path / "hf")
    model = _tiny_hf_pretraining_dir(d, _vocab(TINY["vocab_size"]))
    state = load_file(os.path.join(d, "model.safetensors"))
    assert any(k.startswith("bert.") for k in state)

    p = bert_tf.from_pretrained(d)
    _check_tiny(p, model.bert)
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    h = TINY["hidden_size"]
    np.testing.assert_array_equal(p.extra_weights["cls/predictions/transform/dense/kernel"],
                                  sd["cls.predictions.transform.dense.weight"].T)
    np.testing.assert_array_equal(p.extra_weights["cls/predictions/transform/LayerNorm/gamma"],
                                  sd["cls.predictions.transform.LayerNorm.weight"])
    np.testing.assert_array_equal(p.extra_weights["cls/predictions/output_bias"], sd["cls.predictions.bias"])
    assert p.extra_weights["cls/seq_relationship/output_weights"].shape == (2, h)
    np.testing.assert_array_equal(p.extra_weights["cls/seq_relationship/output_weights"],
                                  sd["cls.seq_relationship.weight"])
    assert "cls/predictions/decoder/kernel" not in p.extra_weights  # tied to the word embeddings

    # Old spelling LayerNorm.gamma/beta, no "bert." prefix, encoder only.
    d2 = str(tmp_path / "hf_old")
    os.makedirs(d2)
    old = {}
    for k, v in state.items():
        if k.startswith("bert."):
            k = k[len("bert."):].replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
            old[k] = v
    save_file(old, os.path.join(d2, "model.safetensors"))
    for f in ("config.json", "vocab.txt"):
        shutil.copyfile(os.path.join(d, f), os.path.join(d2, f))
    p2 = bert_tf.from_pretrained(d2)
    assert p2.extra_weights == {}
    _check_tiny(p2, model.bert)

    # pytorch_model.bin (torch present).
    d3 = str(tmp_path / "hf_bin")
    os.makedirs(d3)
    torch.save(model.state_dict(), os.path.join(d3, "pytorch_model.bin"))
    for f in ("config.json", "vocab.txt"):
        shutil.copyfile(os.path.join(d, f), os.path.join(d3, f))
    p3 = bert_tf.from_pretrained(d3)
    _check_tiny(p3, model.bert)
    assert sorted(p3.extra_weights) == sorted(p.extra_weights)


# --------------------------------------------------------------------------- errors


def _tiny_ours(tmp_path, name="m", cased=False):
    enc = bert_tf.BertEncoder(bert_tf.BertConfig(**TINY))
    vocab = str(tmp_path / "vocab.txt")
    with open(vocab, "w") as f:
        f.write("\n".join(_vocab(TINY["vocab_size"], cased)) + "\n")
    return enc, vocab


def test_missing_and_shape_mismatch_are_named(tmp_path):
    enc, vocab = _tiny_ours(tmp_path)
    d = str(tmp_path / "g")
    bert_tf.save_tf1_checkpoint(enc, os.path.join(d, "bert_model.ckpt"), vocab_file=vocab)
    weights = checkpoints.read_tf1_weights(os.path.join(d, "bert_model.ckpt"))

    dropped = dict(weights)
    del dropped["bert/encoder/layer_1/attention/self/key/bias"]
    del dropped["bert/pooler/dense/kernel"]
    fresh = bert_tf.BertEncoder(bert_tf.BertConfig(**TINY))
    with pytest.raises(CheckpointError, match=r"layer_1/attention/self/key/bias.*pooler/dense/kernel"):
        checkpoints.set_encoder_weights(fresh, dropped)

    # A config that does not fit the checkpoint: the variable and both shapes are named.
    with open(os.path.join(d, "bert_config.json")) as f:
        cfg = json.load(f)
    cfg["intermediate_size"] = 48
    cfg.pop("bert_tf_hidden_act")
    with open(os.path.join(d, "bert_config.json"), "w") as f:
        json.dump(cfg, f)
    with pytest.raises(CheckpointError, match=r"intermediate/dense/kernel.*\(16, 32\).*\(16, 48\)"):
        bert_tf.from_pretrained(d)


def test_truncated_and_missing_files(tmp_path):
    enc, vocab = _tiny_ours(tmp_path)
    ours = str(tmp_path / "ours")
    bert_tf.save_pretrained(enc, ours, vocab)
    w = os.path.join(ours, "weights.safetensors")
    with open(w, "r+b") as f:
        f.truncate(os.path.getsize(w) // 2)
    with pytest.raises(CheckpointError, match="weights.safetensors"):
        bert_tf.from_pretrained(ours)

    g = str(tmp_path / "g")
    prefix = os.path.join(g, "bert_model.ckpt")
    bert_tf.save_tf1_checkpoint(enc, prefix, vocab_file=vocab)
    data = prefix + ".data-00000-of-00001"
    with open(data, "r+b") as f:
        f.truncate(os.path.getsize(data) // 2)
    with pytest.raises(CheckpointError, match="bert_model.ckpt"):
        bert_tf.from_pretrained(g)
    os.remove(data)
    with pytest.raises(CheckpointError, match="data file"):
        bert_tf.from_pretrained(g)

    with pytest.raises(FileNotFoundError):
        bert_tf.from_pretrained(str(tmp_path / "nowhere"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="not a BERT model directory"):
        bert_tf.from_pretrained(str(empty))

    hf = str(tmp_path / "hf")
    os.makedirs(hf)
    enc.config.to_json_file(os.path.join(hf, "config.json"), format="huggingface")
    with pytest.raises(CheckpointError, match="vocab.txt"):
        save_file(checkpoints.get_encoder_weights(enc), os.path.join(hf, "model.safetensors"))
        bert_tf.from_pretrained(hf)


def test_lower_case_inferred(tmp_path):
    enc, vocab = _tiny_ours(tmp_path, cased=True)
    d = str(tmp_path / "cased_L-2_H-16_A-4")
    bert_tf.save_tf1_checkpoint(enc, os.path.join(d, "bert_model.ckpt"), vocab_file=vocab)
    assert bert_tf.from_pretrained(d).lower_case is False
    d2 = str(tmp_path / "some_model")  # no hint in the name: the vocab has capitals
    bert_tf.save_tf1_checkpoint(enc, os.path.join(d2, "bert_model.ckpt"), vocab_file=vocab)
    assert bert_tf.from_pretrained(d2).lower_case is False
    (tmp_path / "u").mkdir()
    enc2, vocab2 = _tiny_ours(tmp_path / "u", cased=False)
    d3 = str(tmp_path / "another_model")
    bert_tf.save_tf1_checkpoint(enc2, os.path.join(d3, "bert_model.ckpt"), vocab_file=vocab2)
    assert bert_tf.from_pretrained(d3).lower_case is True
