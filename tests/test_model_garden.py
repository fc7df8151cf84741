"""Model Garden TF2 checkpoints and TF Hub BERT encoder SavedModels of the real MiniLM, both made by the Model
Garden's own code in .venv-mg (`fixtures.model_garden`), read by `from_pretrained`: outputs equal the Model
Garden encoder's within 1e-5; bad checkpoints and SavedModels are clear errors."""

import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

import bert_tf
from bert_tf.model.checkpoints import CheckpointError
from fixtures import model_garden

TOL = 1e-5


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
