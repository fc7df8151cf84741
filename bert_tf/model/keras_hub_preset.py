"""keras-hub presets in and out: `read_preset` (what `bert_tf.from_pretrained` does with a preset directory) and
`save_keras_hub_preset`.

A keras-hub preset directory (``save_to_preset`` output) holds ``config.json`` (the Keras-serialised backbone,
``"registered_name": "keras_hub>BertBackbone"``), ``model.weights.h5`` (or sharded ``model.weights.json``),
``tokenizer.json`` (``keras_hub>BertTokenizer``: ``lowercase``, ``strip_accents``) with
``assets/tokenizer/vocabulary.txt``, ``metadata.json``, and for a task also ``task.json`` + ``task.weights.h5``
(e.g. ``keras_hub>BertTextClassifier``: dropout and one dense layer on ``pooled_output``, exactly our
`bert_tf.BertClassifier` head) and ``preprocessor.json``.

This module knows backbones and tokenizers only. A task's head is its task folder's business: the folder
registers a `KerasHubTask` (``bert_tf/tasks/classification/keras_hub.py`` does for `BertClassifier` <->
``BertTextClassifier``), through which `read_preset` reads a task preset's head and `save_keras_hub_preset`
writes a task model.

What keras-hub's `BertBackbone` fixes and a `BertConfig` must match to be written as one (checked, an error
otherwise — never a silently different model):

* GELU is keras-hub's ``gelu_approximate`` (the **tanh** form, Google's). A preset therefore reads as
  ``hidden_act="gelu_tanh"``. An encoder with the exact erf GELU (Hugging Face's ``"gelu"``, e.g.
  all-MiniLM-L6-v2) is refused unless ``allow_gelu_tanh=True``: keras-hub's own Hugging Face converter makes
  that switch silently; on MiniLM it moves the last layer by up to 1.6e-2 (sentence embeddings keep a cosine
  above 0.99999; `bench/keras_hub_presets.py`).
* LayerNorm epsilon is 1e-12; one dropout rate for hidden and attention dropout (training only: a differing
  ``attention_probs_dropout_prob`` is logged).

Weights map one to one (query/key/value kernels ``[H, H]`` <-> ``[H, heads, head_size]``, the attention output
kernel ``[H, H]`` <-> ``[heads, head_size, H]``), so outputs agree to float rounding both ways.

Tokenizer: keras-hub's `BertTokenizer` lower-cases with ``lowercase`` and strips accents only with
``strip_accents``; Google's uncased rule (ours, ``lower_case=True``) does both. Presets written here set both to
``lower_case``, so keras-hub's ids equal ours. keras-hub's own presets and its Hugging Face converter write
``lowercase=True, strip_accents=False``: such a preset is read as uncased (what its vocabulary was built with)
and a warning says that keras-hub's own tokenizer keeps accents there, so ids differ on accented words.
"""

import dataclasses
import json
import logging
import os
import shutil
import tempfile
from typing import Callable

import keras_hub
import numpy as np

from bert_tf.model.config import GELU_TANH, BertConfig
from bert_tf.model.encoder import BertEncoder
from bert_tf.model.encoder_weights import (
    GOOGLE_LAYER_NORM_EPS, CheckpointError, Pretrained, check_google_bert, get_encoder_weights, set_encoder_weights)
from bert_tf.model.task_model import BertTaskModel
from bert_tf.text.tokenizer import load_vocab

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
TASK_FILE = "task.json"
WEIGHTS_FILES = ("model.weights.h5", "model.weights.json")
VOCAB_FILE = os.path.join("assets", "tokenizer", "vocabulary.txt")
BACKBONE_NAME = "keras_hub>BertBackbone"
TOKENIZER_NAME = "keras_hub>BertTokenizer"
# keras-hub's BertTokenizer cannot run without these (it looks them up at construction).
REQUIRED_TOKENS = ("[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]")


@dataclasses.dataclass(frozen=True)
class KerasHubTask:
    """How one of our task models maps onto a keras-hub task preset; its task folder registers it."""

    model_class: type  # our task model; matched exactly (a subclass's head may not map)
    registered_name: str  # the keras-hub task class as task.json names it, e.g. "keras_hub>BertTextClassifier"
    # (model, backbone: a BertBackbone with the model's encoder, tokenizer: its BertTokenizer) -> keras-hub task
    to_keras_hub: Callable
    # (preset_dir, task.json path, its "config") -> (the keras-hub backbone, the head under Google's names)
    read_head: Callable


_TASKS = {}


def register_task(task):
    """Makes `read_preset` read ``task.registered_name`` presets' heads and `save_keras_hub_preset` write
    ``task.model_class`` models."""
    _TASKS[task.registered_name] = task


def variable_map(num_layers):
    """``[(google name, keras-hub variable path)]`` for every BertBackbone variable."""
    out = [
        ("bert/embeddings/word_embeddings", "token_embedding/embeddings"),
        ("bert/embeddings/position_embeddings", "position_embedding/embeddings"),
        ("bert/embeddings/token_type_embeddings", "segment_embedding/embeddings"),
        ("bert/embeddings/LayerNorm/gamma", "embeddings_layer_norm/gamma"),
        ("bert/embeddings/LayerNorm/beta", "embeddings_layer_norm/beta"),
    ]
    for i in range(num_layers):
        g, k = f"bert/encoder/layer_{i}/", f"transformer_layer_{i}/"
        for part in ("query", "key", "value"):
            out += [(g + f"attention/self/{part}/{leaf}", k + f"self_attention_layer/{part}/{leaf}")
                    for leaf in ("kernel", "bias")]
        out += [
            (g + "attention/output/dense/kernel", k + "self_attention_layer/attention_output/kernel"),
            (g + "attention/output/dense/bias", k + "self_attention_layer/attention_output/bias"),
            (g + "attention/output/LayerNorm/gamma", k + "self_attention_layer_norm/gamma"),
            (g + "attention/output/LayerNorm/beta", k + "self_attention_layer_norm/beta"),
            (g + "intermediate/dense/kernel", k + "feedforward_intermediate_dense/kernel"),
            (g + "intermediate/dense/bias", k + "feedforward_intermediate_dense/bias"),
            (g + "output/dense/kernel", k + "feedforward_output_dense/kernel"),
            (g + "output/dense/bias", k + "feedforward_output_dense/bias"),
            (g + "output/LayerNorm/gamma", k + "feedforward_layer_norm/gamma"),
            (g + "output/LayerNorm/beta", k + "feedforward_layer_norm/beta"),
        ]
    out += [("bert/pooler/dense/kernel", "pooled_dense/kernel"), ("bert/pooler/dense/bias", "pooled_dense/bias")]
    return out


def _google_shape(path, value):
    """keras-hub's per-head attention shapes -> our 2-D/1-D ones (the same numbers in the same order)."""
    if value.ndim == 3:  # query/key/value kernel [H, heads, size]; attention output kernel [heads, size, H]
        return value.reshape(-1, value.shape[-1]) if path.endswith("attention_output/kernel") \
            else value.reshape(value.shape[0], -1)
    if value.ndim == 2 and path.endswith("/bias"):  # query/key/value bias [heads, size]
        return value.reshape(-1)
    return value


# --------------------------------------------------------------------------- reading


def _read_json(path, what):
    if not os.path.isfile(path):
        raise CheckpointError(f"{os.path.dirname(path)}: keras-hub preset without {os.path.basename(path)} "
                              f"(expected {what}); found: {sorted(os.listdir(os.path.dirname(path)))}")
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{path}: not valid JSON ({e})") from None


def _check_class(path, config, expected, what):
    found = config.get("registered_name")
    if found != expected:
        raise CheckpointError(
            f"{path}: a keras-hub preset of {found or config.get('class_name')!r}; bert_tf reads {what} "
            f"(registered_name {expected!r})")


def _check_layout(preset_dir):
    """The backbone, its weights and the tokenizer's vocabulary are there and are BERT's."""
    found = sorted(os.listdir(preset_dir))
    config_path = os.path.join(preset_dir, CONFIG_FILE)
    backbone = _read_json(config_path, f"the BertBackbone config, {BACKBONE_NAME}")
    _check_class(config_path, backbone, BACKBONE_NAME, "BERT backbones")
    if not any(os.path.isfile(os.path.join(preset_dir, f)) for f in WEIGHTS_FILES):
        raise CheckpointError(f"{preset_dir}: keras-hub preset without weights (expected {' or '.join(WEIGHTS_FILES)}"
                              f" beside {CONFIG_FILE}); found: {found}")
    tokenizer_path = os.path.join(preset_dir, TOKENIZER_FILE)
    tokenizer = _read_json(tokenizer_path, f"the BertTokenizer config, {TOKENIZER_NAME}")
    _check_class(tokenizer_path, tokenizer, TOKENIZER_NAME, "BERT WordPiece tokenizers")
    if not os.path.isfile(os.path.join(preset_dir, VOCAB_FILE)):
        raise CheckpointError(f"{preset_dir}: keras-hub preset without its vocabulary (expected {VOCAB_FILE}); "
                              f"found: {found}")
    return backbone["config"], tokenizer["config"]


def _config_from_backbone(cfg):
    return BertConfig(
        vocab_size=cfg["vocabulary_size"], hidden_size=cfg["hidden_dim"], num_hidden_layers=cfg["num_layers"],
        num_attention_heads=cfg["num_heads"], intermediate_size=cfg["intermediate_dim"], hidden_act=GELU_TANH,
        hidden_dropout_prob=cfg.get("dropout", 0.1), attention_probs_dropout_prob=cfg.get("dropout", 0.1),
        max_position_embeddings=cfg.get("max_sequence_length", 512), type_vocab_size=cfg.get("num_segments", 2),
        layer_norm_eps=GOOGLE_LAYER_NORM_EPS)


def _lower_case(preset_dir, tokenizer_cfg):
    lower_case = bool(tokenizer_cfg.get("lowercase", False))
    if bool(tokenizer_cfg.get("strip_accents", False)) != lower_case:
        logger.warning(
            "%s: keras-hub tokenizer with lowercase=%s, strip_accents=%s; bert_tf tokenizes it %s by Google's rule "
            "(lower-casing and accent stripping together), so keras-hub's own ids differ from ours on accented "
            "words", os.path.join(preset_dir, TOKENIZER_FILE), tokenizer_cfg.get("lowercase"),
            tokenizer_cfg.get("strip_accents"), "uncased" if lower_case else "cased")
    return lower_case


def _load_backbone_and_head(preset_dir):
    """The keras-hub backbone, and a registered task's head under Google's names ({} when the preset is no task)."""
    # keras-hub reads a handle that is not a local directory as a Kaggle/Hugging Face preset and downloads it:
    # only ever give it an existing local directory, as an absolute path.
    if not os.path.isdir(preset_dir):
        raise CheckpointError(f"{preset_dir}: not a keras-hub preset directory (nothing is downloaded)")
    preset_dir = os.path.abspath(preset_dir)
    task_path = os.path.join(preset_dir, TASK_FILE)
    if not os.path.isfile(task_path):
        return keras_hub.models.BertBackbone.from_preset(preset_dir), {}
    task_config = _read_json(task_path, "a task config")
    task = _TASKS.get(task_config.get("registered_name"))
    if task is None:
        logger.warning("%s: task %s is not read (only %s heads are); the backbone is",
                       task_path, task_config.get("registered_name"), ", ".join(sorted(_TASKS)) or "no")
        return keras_hub.models.BertBackbone.from_preset(preset_dir), {}
    return task.read_head(preset_dir, task_path, task_config["config"])


def read_preset(preset_dir, strict=True, dtype=None, config=None):
    """A keras-hub BERT preset as `Pretrained` (format ``"keras_hub"``): encoder, vocabulary, lower_case, and a
    registered task's head as ``extra_weights`` (a `BertTextClassifier`'s: ``output_weights`` [C, H] /
    ``output_bias`` [C])."""
    preset_dir = os.fspath(preset_dir)
    backbone_cfg, tokenizer_cfg = _check_layout(preset_dir)
    cfg = config if config is not None else _config_from_backbone(backbone_cfg)
    backbone, head = _load_backbone_and_head(preset_dir)
    variables = {v.path: v for v in backbone.weights}
    weights = {g: _google_shape(path, np.asarray(variables[path].numpy(), np.float32))
               for g, path in variable_map(backbone.num_layers) if path in variables}
    weights.update(head)
    source = os.path.join(preset_dir, WEIGHTS_FILES[0])
    encoder = BertEncoder(cfg, dtype=dtype)
    extra = set_encoder_weights(encoder, weights, source=source, strict=strict)
    return Pretrained(cfg, encoder, os.path.join(preset_dir, VOCAB_FILE), _lower_case(preset_dir, tokenizer_cfg),
                      extra, "keras_hub")


# --------------------------------------------------------------------------- writing


def _check_representable(config, allow_gelu_tanh):
    """Errors for what a keras-hub BertBackbone cannot hold (see the module docstring)."""
    check_google_bert(config, allow_gelu_tanh, "keras-hub's BertBackbone", "--keras_hub_allow_gelu_tanh")
    if config.attention_probs_dropout_prob != config.hidden_dropout_prob:
        logger.warning("keras-hub's BertBackbone has one dropout rate: hidden_dropout_prob=%s is written, "
                       "attention_probs_dropout_prob=%s is not", config.hidden_dropout_prob,
                       config.attention_probs_dropout_prob)


def keras_hub_backbone(encoder, allow_gelu_tanh=False):
    """A `keras_hub.models.BertBackbone` holding ``encoder``'s weights (float32)."""
    config = encoder.config
    _check_representable(config, allow_gelu_tanh)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=config.vocab_size, num_layers=config.num_hidden_layers,
        num_heads=config.num_attention_heads, hidden_dim=config.hidden_size,
        intermediate_dim=config.intermediate_size, dropout=config.hidden_dropout_prob,
        max_sequence_length=config.max_position_embeddings, num_segments=config.type_vocab_size, dtype="float32")
    weights = get_encoder_weights(encoder)
    variables = {v.path: v for v in backbone.weights}
    for google_name, path in variable_map(config.num_hidden_layers):
        variables[path].assign(np.reshape(weights[google_name], variables[path].shape))
    return backbone


def keras_hub_tokenizer(vocabulary, lower_case):
    """keras-hub's `BertTokenizer` with Google's casing rule (accents stripped exactly when lower-casing)."""
    missing = [t for t in REQUIRED_TOKENS if t not in vocabulary]
    if missing:
        raise ValueError(f"the vocabulary lacks {missing}, which keras-hub's BertTokenizer requires")
    return keras_hub.models.BertTokenizer(vocabulary=list(vocabulary), lowercase=bool(lower_case),
                                          strip_accents=bool(lower_case))


def _task_of(model, allow_gelu_tanh):
    """The keras-hub task equal to a task model, through the `KerasHubTask` its folder registered."""
    task = next((t for t in _TASKS.values() if type(model) is t.model_class), None)
    if task is None:
        raise ValueError(f"{type(model).__name__}: no keras-hub task's head maps one to one onto it; save its "
                         "encoder instead (save_keras_hub_preset(model.encoder, dir, vocab_file=..., lower_case=...))")
    if model.preprocessor is None:
        raise ValueError(f"a {type(model).__name__} without a preprocessor has no vocabulary to write; build it "
                         "with one")
    pre = model.preprocessor
    backbone = keras_hub_backbone(model.encoder, allow_gelu_tanh)
    return task.to_keras_hub(model, backbone, keras_hub_tokenizer(pre.vocabulary, pre.lower_case))


def _write_into(preset_dir, overwrite, write):
    """Runs ``write(tmp_dir)`` and moves the result to ``preset_dir`` (no half-written preset is ever there)."""
    preset_dir = os.path.abspath(os.fspath(preset_dir))
    if os.path.exists(preset_dir) and os.listdir(preset_dir) and not overwrite:
        raise FileExistsError(f"{preset_dir} exists and is not empty (pass overwrite=True to replace it)")
    parent = os.path.dirname(preset_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".keras_hub_preset-", dir=parent)
    try:
        write(tmp)
        if os.path.exists(preset_dir):
            shutil.rmtree(preset_dir)
        os.replace(tmp, preset_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return preset_dir


def save_keras_hub_preset(model, preset_dir, vocab_file=None, lower_case=None, allow_gelu_tanh=False,
                          overwrite=False):
    """Writes a keras-hub preset that keras-hub loads offline; returns its directory.

    Args:
      model: a task model whose folder registered a `KerasHubTask`, e.g. a `bert_tf.BertClassifier` (written as a
        `keras_hub.models.BertTextClassifier` preset: backbone, tokenizer, preprocessor with its sequence length,
        head), a `Pretrained` (what `from_pretrained` returns), or a `BertEncoder` (then give ``vocab_file`` and
        ``lower_case``). A backbone preset loads with
        `keras_hub.models.BertBackbone.from_preset(dir)` and `keras_hub.models.BertTokenizer.from_preset(dir)`.
      preset_dir: the directory to write (must be absent or empty unless ``overwrite``).
      vocab_file, lower_case: the vocabulary and casing of a bare `BertEncoder` (override a `Pretrained`'s).
      allow_gelu_tanh: write an exact-GELU encoder with keras-hub's tanh GELU (see the module docstring).
    """
    if isinstance(model, BertTaskModel):  # a task model: only registered heads map (else an error)
        task = _task_of(model, allow_gelu_tanh)
        return _write_into(preset_dir, overwrite, task.save_to_preset)
    if isinstance(model, Pretrained):
        vocab_file = vocab_file or model.vocab_file
        lower_case = model.lower_case if lower_case is None else lower_case
        model = model.encoder
    if not isinstance(model, BertEncoder):
        raise TypeError(f"save_keras_hub_preset takes a task model, a Pretrained or a BertEncoder, "
                        f"got {type(model).__name__}")
    if vocab_file is None or lower_case is None:
        raise ValueError("a BertEncoder needs vocab_file= and lower_case= (its vocabulary and casing)")
    vocabulary = load_vocab(vocab_file)
    if len(vocabulary) != model.config.vocab_size:
        raise ValueError(f"{vocab_file}: {len(vocabulary)} tokens, the encoder's vocab_size is "
                         f"{model.config.vocab_size}")
    backbone = keras_hub_backbone(model, allow_gelu_tanh)
    tokenizer = keras_hub_tokenizer(vocabulary, lower_case)

    def write(tmp):
        backbone.save_to_preset(tmp)
        tokenizer.save_to_preset(tmp)

    return _write_into(preset_dir, overwrite, write)
