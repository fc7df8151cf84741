"""Model Garden TF2 checkpoints and TF Hub BERT encoder SavedModels of the real MiniLM, both ways.

In: both made by the Model Garden's own code in .venv-mg (`fixtures.model_garden`), read by `from_pretrained`:
outputs equal the Model Garden encoder's within 1e-5; bad checkpoints and SavedModels are clear errors. With the
Model Garden's TF Hub preprocess SavedModel (uncased and cased), vocab and casing come from it: our tokenizer's ids
equal its own on 300 real sentences.
Out: `save_model_garden_checkpoint` and the TF Hub-style encoder export, loaded in .venv-mg by the Model Garden's
`BertEncoder` and by `tensorflow_hub.KerasLayer` (`fixtures/model_garden_check.py`): outputs equal ours within
1e-5 on real sentences; both read back by `from_pretrained` unchanged."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import bert_tf
from bert_tf.export.hub import export_hub_style
from bert_tf.model.checkpoints import CheckpointError
from fixtures import datasets, model_garden

TOL = 1e-5
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def reference():
    try:
        path = model_garden.reference_dir()
    except RuntimeError as e:
        pytest.fail(str(e))
    return path, dict(np.load(os.path.join(path, "inputs.npz"))), dict(np.load(os.path.join(path, "outputs.npz")))


def _assert_matches(pretrained, inputs, outputs):
    ours = pretrained.encoder(inputs)
    mask = inputs["input_mask"][..., None].astype(bool)
    seq = np.abs(np.where(mask, ours["sequence_output"].numpy() - outputs["sequence_output"], 0.0)).max()
    pooled = np.abs(ours["pooled_output"].numpy() - outputs["pooled_output"]).max()
    assert seq < TOL and pooled < TOL, (seq, pooled)


def test_model_garden_checkpoint_matches_the_model_garden_encoder(reference):
    path, inputs, outputs = reference
    pretrained = bert_tf.from_pretrained(os.path.join(path, "model_garden"))
    assert pretrained.format == "model_garden" and pretrained.config.hidden_act == "gelu_tanh"
    assert pretrained.lower_case and pretrained.extra_weights == {}
    _assert_matches(pretrained, inputs, outputs)


def test_tfhub_encoder_matches_the_model_garden_encoder(reference):
    path, inputs, outputs = reference
    pretrained = bert_tf.from_pretrained(os.path.join(path, "tfhub_encoder"))
    assert pretrained.format == "tfhub" and pretrained.lower_case
    assert pretrained.vocab_file.endswith(os.path.join("assets", "vocab.txt"))
    assert (pretrained.config.num_hidden_layers, pretrained.config.num_attention_heads,
            pretrained.config.intermediate_size) == (6, 12, 1536)
    _assert_matches(pretrained, inputs, outputs)


def test_model_garden_checkpoint_without_its_config_is_an_error(reference, tmp_path):
    path = str(tmp_path / "no_config")
    shutil.copytree(os.path.join(reference[0], "model_garden"), path)
    os.remove(os.path.join(path, "bert_config.json"))
    with pytest.raises(CheckpointError, match="bert_config.json is missing .*bert_model.ckpt-1 is a Model Garden TF2 "
                                              "BERT checkpoint; it needs its BERT config JSON"):
        bert_tf.from_pretrained(path)


def test_another_object_checkpoint_is_an_error(reference, tmp_path):
    module = tf.Module()
    module.kernel = tf.Variable(tf.zeros([3, 3]))
    tf.train.Checkpoint(encoder=module).save(str(tmp_path / "ckpt"))
    shutil.copyfile(os.path.join(reference[0], "model_garden", "bert_config.json"), tmp_path / "bert_config.json")
    with pytest.raises(CheckpointError, match="a TF2 object-based checkpoint but a Model Garden BERT encoder "
                                              r"checkpoint .*found e.g. \['encoder/kernel'"):
        bert_tf.from_pretrained(str(tmp_path))


def _text_model(path):
    """A SavedModel that takes raw text (not a BERT encoder's three id tensors), with a vocab asset."""
    module = tf.Module()
    module.table = tf.Variable(tf.zeros([4, 2]))
    module.serve = tf.function(lambda text: {"x": tf.strings.length(text)},
                               input_signature=[tf.TensorSpec([None], tf.string)])
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})


def test_tfhub_savedmodel_of_an_unknown_signature_is_an_error(tmp_path):
    path = str(tmp_path / "text_model")
    _text_model(path)
    with pytest.raises(CheckpointError, match="without assets/vocab.txt"):
        bert_tf.from_pretrained(path)
    os.makedirs(os.path.join(path, "assets"), exist_ok=True)
    with open(os.path.join(path, "assets", "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("[PAD]\n[UNK]\n[CLS]\n[SEP]\n")
    with pytest.raises(CheckpointError, match=r"saved_model.pb: signature inputs \['text'\]; expected a TF Hub BERT "
                                              r"encoder: a dict of int32 \['input_word_ids'"):
        bert_tf.from_pretrained(path)


def _encoder_without_vocab(reference, tmp_path):
    path = str(tmp_path / "encoder_without_vocab")
    shutil.copytree(os.path.join(reference[0], "tfhub_encoder"), path)
    os.remove(os.path.join(path, "assets", "vocab.txt"))
    return path


@pytest.mark.parametrize("name,lower_case", [("uncased", True), ("cased", False)])
def test_tfhub_preprocess_model_gives_vocab_and_casing(reference, tmp_path, name, lower_case):
    """Our tokenizer, built from what is read of the Model Garden's preprocess SavedModel, gives its own ids."""
    path = reference[0]
    preprocess = os.path.join(path, f"tfhub_preprocess_{name}")
    # The uncased one serves an encoder without its own vocab; the cased one overrides the encoder's do_lower_case.
    encoder = _encoder_without_vocab(reference, tmp_path) if lower_case else os.path.join(path, "tfhub_encoder")
    pretrained = bert_tf.from_pretrained(encoder, preprocess_dir=preprocess)
    assert pretrained.format == "tfhub" and pretrained.lower_case is lower_case
    assert pretrained.vocab_file == os.path.join(preprocess, "assets", "vocab.txt")
    with open(os.path.join(path, "sentences.json"), encoding="utf-8") as f:
        sentences = json.load(f)
    theirs = np.load(os.path.join(path, "preprocess_ids.npz"))[name]
    preprocessor = bert_tf.BertPreprocessor(pretrained.vocab_file, lower_case=pretrained.lower_case,
                                            seq_length=theirs.shape[1])
    ours = preprocessor(tf.constant(sentences))["input_word_ids"].numpy()
    differing = [sentences[i] for i in np.flatnonzero((ours != theirs).any(axis=1))]
    assert not differing, differing[:3]


def test_tfhub_preprocess_dir_that_is_not_one_is_an_error(reference, tmp_path):
    encoder = _encoder_without_vocab(reference, tmp_path)
    with pytest.raises(CheckpointError, match="without assets/vocab.txt .*pass preprocess_dir="):
        bert_tf.from_pretrained(encoder)
    not_preprocess = os.path.join(reference[0], "model_garden")
    with pytest.raises(CheckpointError, match=f"{not_preprocess}: not a TF Hub BERT preprocess SavedModel"):
        bert_tf.from_pretrained(encoder, preprocess_dir=not_preprocess)
    text_model = str(tmp_path / "text_model")
    _text_model(text_model)
    os.makedirs(os.path.join(text_model, "assets"), exist_ok=True)
    shutil.copyfile(os.path.join(reference[0], "tfhub_encoder", "assets", "vocab.txt"),
                    os.path.join(text_model, "assets", "vocab.txt"))
    with pytest.raises(CheckpointError, match="saved_model.pb: a SavedModel without tf-text's WordPiece tokenizer op"):
        bert_tf.from_pretrained(encoder, preprocess_dir=text_model)
    with pytest.raises(CheckpointError, match="preprocess_dir= is for a TF Hub encoder SavedModel; this is a "
                                              "'huggingface' model"):
        bert_tf.from_pretrained(datasets.minilm_dir(), preprocess_dir=os.path.join(reference[0], "tfhub_preprocess_cased"))


# --------------------------------------------------------------------------- out: ours -> Model Garden / TF Hub


@pytest.fixture(scope="module")
def minilm_tanh():
    """MiniLM with the tanh GELU, the Model Garden's: its outputs there are ours exactly (not up to the GELUs)."""
    config = bert_tf.BertConfig.from_json_file(os.path.join(datasets.minilm_dir(), "config.json"))
    return bert_tf.from_pretrained(datasets.minilm_dir(), config=dataclasses.replace(config, hidden_act="gelu_tanh"))


@pytest.fixture(scope="module")
def written(reference, minilm_tanh, tmp_path_factory):
    """Ours written both ways, then loaded in .venv-mg by the Model Garden and TF Hub on real sentences."""
    work = tmp_path_factory.mktemp("ours")
    garden_dir, hub_dir, out = str(work / "garden"), str(work / "hub"), str(work / "theirs.npz")
    bert_tf.save_model_garden_checkpoint(minilm_tanh, garden_dir)
    preprocessor = bert_tf.BertPreprocessor(minilm_tanh.vocab_file, lower_case=True, seq_length=model_garden.SEQ_LENGTH)
    export_hub_style(preprocessor, minilm_tanh.encoder, hub_dir)
    sentences = str(work / "sentences.json")  # the sentences of the reference's inputs.npz
    with open(sentences, "w", encoding="utf-8") as f:
        json.dump(datasets.real_sentences(model_garden.SENTENCES), f)
    proc = subprocess.run([model_garden.mg_python(), os.path.join(ROOT, "fixtures", "model_garden_check.py"),
                           garden_dir, hub_dir, os.path.join(reference[0], "inputs.npz"), sentences, out],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return garden_dir, hub_dir, dict(np.load(out))


def _assert_close(name, ours, theirs, mask=None):
    diff = np.abs(ours - theirs) if mask is None else np.abs(np.where(mask, ours - theirs, 0.0))
    assert diff.max() < TOL, (name, diff.max())


def test_model_garden_bert_encoder_restores_our_checkpoint(reference, minilm_tanh, written):
    _, inputs, their_conversion = reference
    garden_dir, _, theirs = written
    assert sorted(os.listdir(garden_dir)) == ["bert_config.json", "bert_model.ckpt-1.data-00000-of-00001",
                                              "bert_model.ckpt-1.index", "checkpoint", "vocab.txt"]
    ours = minilm_tanh.encoder(inputs)
    mask = inputs["input_mask"][..., None].astype(bool)
    for name in ("sequence_output", "pooled_output"):
        name_mask = mask if name == "sequence_output" else None
        _assert_close(name, ours[name].numpy(), theirs[f"garden_{name}"], name_mask)
        # and the same as the Model Garden's own conversion of these weights (its converter's checkpoint)
        _assert_close(name, their_conversion[name], theirs[f"garden_{name}"], name_mask)


def test_model_garden_checkpoint_round_trip(minilm_tanh, written):
    back = bert_tf.from_pretrained(written[0])
    assert back.format == "model_garden" and back.config == minilm_tanh.config and back.lower_case
    for a, b in zip(back.encoder.get_weights(), minilm_tanh.encoder.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_tf_hub_keras_layer_runs_our_encoder_export(reference, minilm_tanh, written):
    _, inputs, _ = reference
    _, _, theirs = written
    ours = minilm_tanh.encoder(inputs)
    mask = inputs["input_mask"][..., None].astype(bool)
    _assert_close("sequence_output", ours["sequence_output"].numpy(), theirs["hub_sequence_output"], mask)
    _assert_close("pooled_output", ours["pooled_output"].numpy(), theirs["hub_pooled_output"])
    _assert_close("default", ours["pooled_output"].numpy(), theirs["hub_default"])
    _assert_close("encoder_outputs", np.stack([o.numpy() for o in ours["encoder_outputs"]]),
                  theirs["hub_encoder_outputs"], mask[None])
    # KerasLayer(trainable=True) fine-tunes every encoder weight (all 6 layers, embeddings, pooler)
    assert int(theirs["hub_trainable_variables"]) == len(minilm_tanh.encoder.trainable_variables)
    assert int(theirs["hub_training_gradients"]) == len(minilm_tanh.encoder.trainable_variables)
    assert bool(theirs["hub_lower_case"]) and int(theirs["hub_vocab_lines"]) == minilm_tanh.config.vocab_size
    # TF Hub's recipe from raw text: string -> our preprocessing -> our encoder, in a tf-keras model
    np.testing.assert_array_equal(theirs["text_input_word_ids"], inputs["input_word_ids"])
    _assert_close("text pooled_output", ours["pooled_output"].numpy(), theirs["text_pooled_output"])


def test_our_tf_hub_export_round_trip(minilm_tanh, written):
    back = bert_tf.from_pretrained(os.path.join(written[1], "encoder"))
    assert back.format == "tfhub" and back.config == minilm_tanh.config and back.lower_case
    for a, b in zip(back.encoder.get_weights(), minilm_tanh.encoder.get_weights()):
        np.testing.assert_array_equal(a, b)


def _tiny(tmp_path, hidden_act):
    vocab = str(tmp_path / "vocab.txt")
    with open(vocab, "w", encoding="utf-8") as f:
        f.write("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "c"]) + "\n")
    encoder = bert_tf.BertEncoder(bert_tf.BertConfig(vocab_size=8, hidden_size=8, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=16,
                                                     hidden_act=hidden_act))
    return encoder, vocab


def test_what_the_model_garden_cannot_hold_is_refused(tmp_path):
    exact, vocab = _tiny(tmp_path, "gelu")
    with pytest.raises(ValueError, match="exact erf GELU.*Model Garden's BertEncoder.*allow_gelu_tanh"):
        bert_tf.save_model_garden_checkpoint(exact, str(tmp_path / "refused"), vocab_file=vocab)
    assert not os.path.exists(tmp_path / "refused")
    bert_tf.save_model_garden_checkpoint(exact, str(tmp_path / "allowed"), vocab_file=vocab, allow_gelu_tanh=True)
    with open(tmp_path / "allowed" / "bert_config.json", encoding="utf-8") as f:
        assert json.load(f)["hidden_act"] == "gelu"  # Google's spelling of the tanh GELU, which the Model Garden runs
    assert bert_tf.from_pretrained(str(tmp_path / "allowed")).config.hidden_act == "gelu_tanh"
    relu, _ = _tiny(tmp_path, "relu")
    with pytest.raises(ValueError, match="hidden_act='relu'"):
        bert_tf.save_model_garden_checkpoint(relu, str(tmp_path / "relu"))
    eps = bert_tf.BertEncoder(dataclasses.replace(exact.config, hidden_act="gelu_tanh", layer_norm_eps=1e-6))
    with pytest.raises(ValueError, match="layer_norm_eps=1e-06"):
        bert_tf.save_model_garden_checkpoint(eps, str(tmp_path / "eps"))
    with pytest.raises(ValueError, match="5 tokens, the encoder's vocab_size is 8"):
        short = str(tmp_path / "short.txt")
        with open(short, "w", encoding="utf-8") as f:
            f.write("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n")
        tanh = bert_tf.BertEncoder(dataclasses.replace(exact.config, hidden_act="gelu_tanh"))
        bert_tf.save_model_garden_checkpoint(tanh, str(tmp_path / "short"), vocab_file=short)


def test_export_program_writes_a_model_garden_checkpoint(tmp_path):
    encoder, vocab = _tiny(tmp_path, "gelu_tanh")
    model = bert_tf.BertClassifier(encoder, bert_tf.BertPreprocessor(vocab, seq_length=8), num_classes=2)
    model.build()
    model.save(str(tmp_path / "model.keras"))
    out = str(tmp_path / "garden")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "trainers", "export.py"),
                           f"--keras_model={tmp_path / 'model.keras'}", "--format=model_garden",
                           f"--checkpoint_dir={out}"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    back = bert_tf.from_pretrained(out)
    assert back.format == "model_garden" and back.config == encoder.config
    with open(back.vocab_file, encoding="utf-8") as f:
        assert f.read().split() == model.preprocessor.vocabulary
    for a, b in zip(back.encoder.get_weights(), encoder.get_weights()):
        np.testing.assert_array_equal(a, b)
