"""The encoder's weights under Google's TF1 names, and what every checkpoint reader returns.

The layer below `bert_tf.model.checkpoints` and the format modules it reads and writes through
(`bert_tf.model.keras_hub_preset`, `bert_tf.model.model_garden`): those build on these names and types without
importing `checkpoints`, so `checkpoints` imports them at its top. Everything here but `check_google_bert` is also
importable from `bert_tf.model.checkpoints`. `check_google_bert` is the one rule of the writers whose target fixes
Google's BERT architecture (keras-hub's `BertBackbone`, the Model Garden's `BertEncoder`).
"""

import collections
import logging

import numpy as np

from bert_tf.model.config import GELU_EXACT, GELU_TANH

logger = logging.getLogger(__name__)

Pretrained = collections.namedtuple(
    "Pretrained", ["config", "encoder", "vocab_file", "lower_case", "extra_weights", "format"])
Pretrained.__doc__ = """What `from_pretrained` returns.

Fields: ``config`` (`BertConfig`), ``encoder`` (`BertEncoder` with the weights),
``vocab_file`` (path), ``lower_case`` (bool), ``extra_weights`` (dict Google name ->
np.ndarray of the non-encoder weights found, e.g. MLM/NSP heads), ``format``
(``"google"``, ``"huggingface"``, ``"bert_tf"``, ``"keras_hub"``, ``"model_garden"`` or ``"tfhub"``)."""


class CheckpointError(ValueError):
    """A checkpoint could not be read or does not fit the model."""


def encoder_variable_map(encoder):
    """``[(variable, [google names])]`` for every encoder variable.

    A variable with several names (the fused ``qkv`` kernel/bias) holds them
    side by side along its last axis (query, key, value).
    """
    out = []
    emb = encoder.embeddings
    out += [
        (emb.word_embeddings, ["bert/embeddings/word_embeddings"]),
        (emb.position_embeddings, ["bert/embeddings/position_embeddings"]),
        (emb.token_type_embeddings, ["bert/embeddings/token_type_embeddings"]),
        (emb.gamma, ["bert/embeddings/LayerNorm/gamma"]),
        (emb.beta, ["bert/embeddings/LayerNorm/beta"]),
    ]
    for i, blk in enumerate(encoder.transformer_layers):
        p = f"bert/encoder/layer_{i}/"
        out += [
            (blk.qkv_kernel, [p + f"attention/self/{n}/kernel" for n in ("query", "key", "value")]),
            (blk.qkv_bias, [p + f"attention/self/{n}/bias" for n in ("query", "key", "value")]),
            (blk.attention_output_kernel, [p + "attention/output/dense/kernel"]),
            (blk.attention_output_bias, [p + "attention/output/dense/bias"]),
            (blk.attention_norm_gamma, [p + "attention/output/LayerNorm/gamma"]),
            (blk.attention_norm_beta, [p + "attention/output/LayerNorm/beta"]),
            (blk.intermediate_kernel, [p + "intermediate/dense/kernel"]),
            (blk.intermediate_bias, [p + "intermediate/dense/bias"]),
            (blk.output_kernel, [p + "output/dense/kernel"]),
            (blk.output_bias, [p + "output/dense/bias"]),
            (blk.output_norm_gamma, [p + "output/LayerNorm/gamma"]),
            (blk.output_norm_beta, [p + "output/LayerNorm/beta"]),
        ]
    out += [
        (encoder.pooler.kernel, ["bert/pooler/dense/kernel"]),
        (encoder.pooler.bias, ["bert/pooler/dense/bias"]),
    ]
    return out


def get_encoder_weights(encoder):
    """Dict Google name -> np.ndarray (float32) of all encoder weights."""
    weights = {}
    for var, names in encoder_variable_map(encoder):
        value = np.asarray(var.numpy())
        parts = np.split(value, len(names), axis=-1) if len(names) > 1 else [value]
        for name, part in zip(names, parts):
            weights[name] = np.ascontiguousarray(part)
    return weights


def set_encoder_weights(encoder, weights, source="weights", strict=True):
    """Assign encoder weights from a dict keyed by Google names.

    Returns the dict of the remaining (non-encoder) entries. Missing encoder
    names raise `CheckpointError` listing them (``strict=False``: logged, the
    variables keep their current values). A shape mismatch always raises,
    naming the variable and both shapes.
    """
    vmap = encoder_variable_map(encoder)
    used = set()
    missing = []
    assignments = []
    for var, names in vmap:
        parts = []
        expected = tuple(var.shape)
        part_shape = expected[:-1] + (expected[-1] // len(names),) if len(names) > 1 else expected
        for name in names:
            if name not in weights:
                missing.append(name)
                continue
            value = np.asarray(weights[name])
            if tuple(value.shape) != part_shape:
                raise CheckpointError(
                    f"{source}: shape mismatch for {name}: checkpoint has {tuple(value.shape)}, "
                    f"the model (config) expects {part_shape}")
            parts.append(value)
            used.add(name)
        if len(parts) == len(names):
            full = np.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]
            assignments.append((var, full))
    if missing:
        msg = f"{source}: {len(missing)} encoder weight(s) missing: {', '.join(missing)}"
        if strict:
            raise CheckpointError(msg)
        logger.warning("%s (left at their initial values)", msg)
    for var, full in assignments:
        var.assign(full.astype(np.float32, copy=False))
    return {k: v for k, v in weights.items() if k not in used}


GOOGLE_LAYER_NORM_EPS = 1e-12  # fixed in Google's BERT, keras-hub's BertBackbone and the Model Garden's BertEncoder


def check_google_bert(config, allow_gelu_tanh, target, flag):
    """Errors for a config that ``target`` (a format fixed to Google's BERT: tanh GELU, LayerNorm epsilon 1e-12)
    cannot hold. An exact-GELU encoder (Hugging Face's ``"gelu"``, e.g. all-MiniLM-L6-v2) is written only with
    ``allow_gelu_tanh`` (the option ``flag``): its outputs there move by the difference of the two GELUs."""
    if config.hidden_act == GELU_EXACT and not allow_gelu_tanh:
        raise ValueError(
            f"this encoder uses the exact erf GELU (hidden_act='gelu'); {target} always computes the tanh "
            f"approximation. Pass allow_gelu_tanh=True ({flag}) to write it anyway: outputs then move by the "
            "difference of the two GELUs")
    if config.hidden_act not in (GELU_EXACT, GELU_TANH):
        raise ValueError(f"hidden_act={config.hidden_act!r}: {target} only has the tanh GELU")
    if not np.isclose(config.layer_norm_eps, GOOGLE_LAYER_NORM_EPS, rtol=1e-6, atol=0.0):
        raise ValueError(f"layer_norm_eps={config.layer_norm_eps}: {target} fixes it at {GOOGLE_LAYER_NORM_EPS}")
