"""Loading and saving BERT weights: Google TF1 checkpoints, Hugging Face files, our own format.

All weights are handled under **Google's TF1 variable names** (see
``../shared/NOTES.md``): ``bert/embeddings/word_embeddings``,
``bert/encoder/layer_0/attention/self/query/kernel`` (kernels ``[in, out]``),
``bert/pooler/dense/bias``, and for the pre-training heads
``cls/predictions/transform/dense/kernel``, ``cls/predictions/transform/LayerNorm/{gamma,beta}``,
``cls/predictions/output_bias``, ``cls/seq_relationship/output_weights`` ``[2, H]``,
``cls/seq_relationship/output_bias``. Hugging Face names are translated to these
(``.weight`` of a Linear is transposed; ``LayerNorm.weight/bias`` and the old
``LayerNorm.gamma/beta`` both map to ``gamma/beta``; the ``bert.`` prefix is optional;
``cls.predictions.bias`` -> ``cls/predictions/output_bias``,
``cls.seq_relationship.weight`` -> ``cls/seq_relationship/output_weights``).

Formats read by `from_pretrained`:

* ``"google"``: a directory with ``bert_config.json``, ``bert_model.ckpt.{index,data-*}``
  (or any TF1 checkpoint found through its ``checkpoint`` file / ``*.index``) and
  ``vocab.txt``; or a checkpoint prefix. Optimizer slots (``adam_m``, ``adam_v``,
  ``Adam``, ``Adam_1``, ``global_step``, ...) are ignored. ``"gelu"`` there means the
  tanh approximation (see `bert_tf.model.config`).
* ``"huggingface"``: ``config.json`` + ``model.safetensors`` (read with
  ``safetensors.numpy``; no torch needed; sharded ``*.index.json`` too) or
  ``pytorch_model.bin`` (needs torch) + ``vocab.txt``.
* ``"bert_tf"``: written by `save_pretrained`: ``bert_tf.json`` (config, lower_case),
  ``weights.safetensors`` (Google names, encoder + extra weights), ``vocab.txt``.
* ``"keras_hub"``: a keras-hub preset directory (``save_to_preset`` output: ``config.json`` with a
  ``registered_name``, ``model.weights.h5``, ``tokenizer.json``, ``assets/tokenizer/vocabulary.txt``); read by
  `bert_tf.model.keras_hub_preset`, which also writes them (`bert_tf.save_keras_hub_preset`).
* ``"model_garden"``: a TF Model Garden TF2 BERT checkpoint (object-based, ``encoder/layer_with_weights-N/...``)
  with its ``bert_config.json`` and ``vocab.txt``; ``"tfhub"``: a TF Hub BERT encoder SavedModel
  (``saved_model.pb``, ``assets/vocab.txt``), checked against our encoder on a probe batch
  (`bert_tf.model.model_garden`, which also writes the former: `bert_tf.save_model_garden_checkpoint`; our own
  TF Hub-style export, `bert_tf.export.hub`, reads back as ``"tfhub"``).

Missing encoder weights are an error listing their names (never a silent random
init); non-encoder weights are returned in ``Pretrained.extra_weights`` (and
logged by name); a shape mismatch is an error naming the variable and both shapes.
"""

import glob
import json
import logging
import os
import re
import shutil

import numpy as np
from safetensors.numpy import save as safetensors_save

from bert_tf.model import keras_hub_preset, model_garden
from bert_tf.model.config import BertConfig
from bert_tf.model.encoder import BertEncoder
# Defined below the format modules (which build on them); public here as before.
from bert_tf.model.encoder_weights import (  # noqa: F401
    CheckpointError, Pretrained, encoder_variable_map, get_encoder_weights, set_encoder_weights)
from bert_tf import atomic

logger = logging.getLogger(__name__)

OUR_MARKER = "bert_tf.json"
OUR_WEIGHTS = "weights.safetensors"
_FORMAT_VERSION = 1

# Optimizer/bookkeeping variables in TF1 checkpoints that are not model weights.
_SKIP_RE = re.compile(
    r"(^|/)(adam_m|adam_v|Adam|Adam_1|Momentum|LAMB|lamb_m|lamb_v|ExponentialMovingAverage)$"
    r"|^(global_step|good_steps|loss_scale|current_loss_scale|beta1_power|beta2_power)$"
    r"|^_CHECKPOINTABLE_OBJECT_GRAPH$")


# --------------------------------------------------------------------------- name maps


HF_HEAD_NAMES = {
    "cls.predictions.bias": ("cls/predictions/output_bias", False),
    "cls.predictions.decoder.bias": ("cls/predictions/output_bias", False),
    "cls.predictions.transform.dense.weight": ("cls/predictions/transform/dense/kernel", True),
    "cls.predictions.transform.dense.bias": ("cls/predictions/transform/dense/bias", False),
    "cls.predictions.transform.LayerNorm.weight": ("cls/predictions/transform/LayerNorm/gamma", False),
    "cls.predictions.transform.LayerNorm.gamma": ("cls/predictions/transform/LayerNorm/gamma", False),
    "cls.predictions.transform.LayerNorm.bias": ("cls/predictions/transform/LayerNorm/beta", False),
    "cls.predictions.transform.LayerNorm.beta": ("cls/predictions/transform/LayerNorm/beta", False),
    "cls.seq_relationship.weight": ("cls/seq_relationship/output_weights", False),
    "cls.seq_relationship.bias": ("cls/seq_relationship/output_bias", False),
    "classifier.weight": ("output_weights", False),
    "classifier.bias": ("output_bias", False),
}
_HF_IGNORED = re.compile(r"^(bert\.)?embeddings\.position_ids$|^cls\.predictions\.decoder\.weight$")


def hf_name_to_google(name):
    """``(google_name, transpose)`` for a Hugging Face BERT weight name, or None if it is
    a buffer/tied copy to ignore (``position_ids``, ``cls.predictions.decoder.weight``).

    >>> hf_name_to_google("bert.encoder.layer.3.attention.self.query.weight")
    ('bert/encoder/layer_3/attention/self/query/kernel', True)
    >>> hf_name_to_google("embeddings.LayerNorm.gamma")
    ('bert/embeddings/LayerNorm/gamma', False)
    """
    if _HF_IGNORED.search(name):
        return None
    if name in HF_HEAD_NAMES:
        return HF_HEAD_NAMES[name]
    n = name[len("bert."):] if name.startswith("bert.") else name
    n = re.sub(r"(^|\.)layer\.(\d+)\.", r"\1layer_\2.", n)
    parts = n.split(".")
    if len(parts) < 2:
        return ("/".join(parts), False)
    owner, leaf = parts[-2], parts[-1]
    transpose = False
    if owner == "LayerNorm":
        leaf = {"weight": "gamma", "bias": "beta"}.get(leaf, leaf)
    elif owner.endswith("_embeddings") and leaf == "weight":
        parts = parts[:-1]
        leaf = None
    elif leaf == "weight":
        leaf, transpose = "kernel", True
    if leaf is not None:
        parts[-1] = leaf
    prefix = "bert/" if parts[0] in ("embeddings", "encoder", "pooler") else ""
    return (prefix + "/".join(parts), transpose)


# --------------------------------------------------------------------------- readers


def _to_float32(name, arr, source):
    arr = np.asarray(arr)
    if arr.dtype.kind == "f" and arr.dtype != np.float32:
        arr = arr.astype(np.float32)
    return arr


def _read_safetensors(path):
    from safetensors.numpy import load_file

    try:
        return load_file(path)
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: cannot read safetensors file (truncated or corrupt?): {e}") from None


def _read_torch_bin(path):
    try:
        import torch
    except ImportError:
        raise CheckpointError(
            f"{path}: reading pytorch_model.bin needs torch; install torch or convert the file to "
            "model.safetensors") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: cannot read PyTorch checkpoint (truncated or corrupt?): {e}") from None
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return {k: v.detach().float().numpy() if v.is_floating_point() else v.numpy()
            for k, v in state.items() if hasattr(v, "numpy")}


def read_hf_weights(model_dir):
    """Weights of a Hugging Face BERT dir as a dict of Google names -> np.ndarray."""
    st = os.path.join(model_dir, "model.safetensors")
    st_index = os.path.join(model_dir, "model.safetensors.index.json")
    pt = os.path.join(model_dir, "pytorch_model.bin")
    if os.path.isfile(st):
        raw, source = _read_safetensors(st), st
    elif os.path.isfile(st_index):
        with open(st_index, encoding="utf-8") as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        raw = {}
        for shard in shards:
            shard_path = os.path.join(model_dir, shard)
            if not os.path.isfile(shard_path):
                raise CheckpointError(f"{st_index}: shard file missing: {shard_path}")
            raw.update(_read_safetensors(shard_path))
        source = st_index
    elif os.path.isfile(pt):
        raw, source = _read_torch_bin(pt), pt
    else:
        raise CheckpointError(
            f"{model_dir}: no Hugging Face weights (model.safetensors, model.safetensors.index.json "
            "or pytorch_model.bin)")
    out = {}
    for name, arr in raw.items():
        mapped = hf_name_to_google(name)
        if mapped is None:
            continue
        gname, transpose = mapped
        arr = _to_float32(name, arr, source)
        if transpose:
            arr = np.ascontiguousarray(arr.T)
        if gname in out and name == "cls.predictions.decoder.bias":
            continue  # duplicate of cls.predictions.bias
        out[gname] = arr
    return out, source


def find_tf1_checkpoint(path):
    """The TF1 checkpoint prefix for a dir or prefix (``bert_model.ckpt`` preferred)."""
    if os.path.isfile(path + ".index"):
        return path
    if not os.path.isdir(path):
        raise CheckpointError(f"no TF1 checkpoint at {path} (expected {path}.index or a directory)")
    preferred = os.path.join(path, "bert_model.ckpt")
    if os.path.isfile(preferred + ".index"):
        return preferred
    import tensorflow as tf

    latest = tf.train.latest_checkpoint(path)
    if latest and os.path.isfile(latest + ".index"):
        return latest
    indexes = sorted(glob.glob(os.path.join(path, "*.index")))
    if len(indexes) == 1:
        return indexes[0][: -len(".index")]
    if not indexes:
        raise CheckpointError(f"{path}: no TF1 checkpoint (*.index) found")
    raise CheckpointError(f"{path}: several checkpoints and no 'checkpoint' file: {indexes}")


def read_tf1_weights(prefix):
    """All non-optimizer variables of a TF1 checkpoint: dict name -> np.ndarray."""
    import tensorflow as tf

    data_files = glob.glob(prefix + ".data-*")
    if not data_files:
        raise CheckpointError(f"{prefix}: checkpoint data file ({prefix}.data-*) is missing")
    try:
        reader = tf.train.load_checkpoint(prefix)
        names = sorted(reader.get_variable_to_shape_map())
        out = {}
        for name in names:
            if _SKIP_RE.search(name):
                continue
            out[name] = _to_float32(name, reader.get_tensor(name), prefix)
    except Exception as e:  # OpError, IndexError ('Read less bytes'), ...
        raise CheckpointError(f"{prefix}: cannot read TF1 checkpoint (truncated or corrupt?): {e}") from None
    return out


# --------------------------------------------------------------------------- lower-casing


def _infer_lower_case(model_dir, vocab_file):
    tok_cfg = os.path.join(model_dir, "tokenizer_config.json")
    if os.path.isfile(tok_cfg):
        with open(tok_cfg, encoding="utf-8") as f:
            d = json.load(f)
        if "do_lower_case" in d:
            return bool(d["do_lower_case"])
    base = os.path.basename(os.path.normpath(model_dir)).lower()
    if "uncased" in base:
        return True
    if "cased" in base:
        return False
    # An uncased vocab has no capital letters outside [CLS]-style special tokens.
    if vocab_file and os.path.isfile(vocab_file):
        with open(vocab_file, encoding="utf-8") as f:
            for line in f:
                tok = line.strip()
                if tok.startswith("[") and tok.endswith("]"):
                    continue
                if tok.lower() != tok:
                    return False
    return True


# --------------------------------------------------------------------------- public API


def _is_keras_hub_preset(path):
    """A ``config.json`` holding a Keras-serialised object (``registered_name``): what keras-hub writes."""
    config_path = os.path.join(path, "config.json")
    if not os.path.isfile(config_path):
        return False
    with open(config_path, encoding="utf-8") as f:
        try:
            config = json.load(f)
        except json.JSONDecodeError:
            return False
    return isinstance(config, dict) and "registered_name" in config


def detect_format(path):
    """``"bert_tf"``, ``"keras_hub"``, ``"tfhub"``, ``"huggingface"`` or ``"google"`` (Google TF1 or Model Garden
    TF2 checkpoint: told apart when read) for a model directory or checkpoint prefix."""
    path = os.fspath(path)
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, OUR_MARKER)):
            return "bert_tf"
        if _is_keras_hub_preset(path):  # before Hugging Face: both name their config config.json
            return "keras_hub"
        if model_garden.is_saved_model(path):
            return "tfhub"
        if os.path.isfile(os.path.join(path, "config.json")) and any(
                os.path.isfile(os.path.join(path, f)) for f in
                ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")):
            return "huggingface"
        if os.path.isfile(os.path.join(path, "bert_config.json")) or glob.glob(os.path.join(path, "*.index")):
            return "google"
        raise CheckpointError(
            f"{path}: not a BERT model directory (no {OUR_MARKER}; no keras-hub config.json with a registered_name; "
            "no config.json with model.safetensors/pytorch_model.bin; no bert_config.json or TF1 checkpoint); "
            f"found: {sorted(os.listdir(path))}")
    if os.path.isfile(path + ".index"):
        return "google"
    raise FileNotFoundError(f"no BERT model at {path}")


_FORMAT_NAMES = {"google": "Google TF1 BERT checkpoint", "model_garden": "Model Garden TF2 BERT checkpoint"}


def _model_garden_weights(raw, source):
    try:
        return model_garden.checkpoint_weights(raw, source)
    except ValueError as e:
        raise CheckpointError(str(e)) from None


def _from_hub_encoder(path, strict, dtype, config, preprocess_dir):
    """A TF Hub BERT encoder SavedModel (`bert_tf.model.model_garden`), checked against the encoder built from it."""
    try:
        cfg, weights, vocab_file, lower_case, loaded = model_garden.read_hub_encoder(path, preprocess_dir)
        cfg = config if config is not None else cfg
        encoder = BertEncoder(cfg, dtype=dtype)
        extra = set_encoder_weights(encoder, weights, source=path, strict=strict)
        model_garden.check_hub_outputs(loaded, encoder, os.path.join(path, "saved_model.pb"))
    except ValueError as e:
        raise CheckpointError(str(e)) from None
    if lower_case is None:
        lower_case = _infer_lower_case(path, vocab_file)
    return Pretrained(cfg, encoder, vocab_file, lower_case, extra, "tfhub")


def from_pretrained(path, strict=True, dtype=None, config=None, preprocess_dir=None):
    """Load a BERT encoder from a Google, Hugging Face, bert_tf, keras-hub preset, Model Garden or TF Hub directory.

    Args:
      path: model directory (or a TF1 checkpoint prefix such as ``.../bert_model.ckpt``).
      strict: missing encoder weights raise `CheckpointError` (default). With
        ``False`` they are logged and keep their random init.
      dtype: optional Keras dtype policy for the encoder (e.g. ``"mixed_bfloat16"``).
      config: optional `BertConfig` overriding the one in the directory.
      preprocess_dir: for a TF Hub encoder SavedModel only: its matching TF Hub preprocess SavedModel (e.g.
        ``bert_en_uncased_preprocess``), whose vocabulary and casing are then used.

    Returns:
      `Pretrained` (config, encoder, vocab_file, lower_case, extra_weights, format).

    Example (a Hugging Face dir; see `tests/test_checkpoints.py` for all formats):

    >>> import conftest, bert_tf  # doctest: +SKIP
    >>> p = bert_tf.from_pretrained(conftest.minilm_model_dir())  # doctest: +SKIP
    >>> p.format, p.config.hidden_size, p.lower_case  # doctest: +SKIP
    ('huggingface', 384, True)
    """
    path = os.fspath(path)
    fmt = detect_format(path)
    if preprocess_dir is not None and fmt != "tfhub":
        raise CheckpointError(f"{path}: preprocess_dir= is for a TF Hub encoder SavedModel; this is a {fmt!r} "
                              "model")
    if fmt == "keras_hub":
        return keras_hub_preset.read_preset(path, strict=strict, dtype=dtype, config=config)
    if fmt == "tfhub":
        return _from_hub_encoder(path, strict, dtype, config, preprocess_dir)
    model_dir = path if os.path.isdir(path) else os.path.dirname(path)
    vocab_file = os.path.join(model_dir, "vocab.txt")
    lower_case = None

    if fmt == "bert_tf":
        marker = os.path.join(model_dir, OUR_MARKER)
        with open(marker, encoding="utf-8") as f:
            meta = json.load(f)
        if meta.get("format") != "bert_tf":
            raise CheckpointError(f"{marker}: not a bert_tf model description")
        cfg = BertConfig.from_dict(meta["config"])
        lower_case = bool(meta.get("lower_case", True))
        vocab_file = os.path.join(model_dir, meta.get("vocab_file", "vocab.txt"))
        wpath = os.path.join(model_dir, meta.get("weights_file", OUR_WEIGHTS))
        if not os.path.isfile(wpath):
            raise CheckpointError(f"{model_dir}: weights file missing: {wpath}")
        weights, source = _read_safetensors(wpath), wpath
    elif fmt == "huggingface":
        cfg = BertConfig.from_json_file(os.path.join(model_dir, "config.json"), source="huggingface")
        weights, source = read_hf_weights(model_dir)
    else:
        cfg_path = os.path.join(model_dir, "bert_config.json")
        source = find_tf1_checkpoint(path)
        weights = read_tf1_weights(source)
        if model_garden.is_object_checkpoint(weights):
            fmt = "model_garden"
            weights = _model_garden_weights(weights, source)
        if config is None and not os.path.isfile(cfg_path):
            raise CheckpointError(
                f"{model_dir}: bert_config.json is missing ({source} is a {_FORMAT_NAMES[fmt]}; it needs its "
                "BERT config JSON, bert_config.json, beside it, or pass config=)")
        cfg = BertConfig.from_json_file(cfg_path, source="google") if config is None else config
    if config is not None:
        cfg = config

    if not os.path.isfile(vocab_file):
        raise CheckpointError(f"{model_dir}: vocab.txt is missing ({vocab_file})")
    if lower_case is None:
        lower_case = _infer_lower_case(model_dir, vocab_file)

    encoder = BertEncoder(cfg, dtype=dtype)
    extra = set_encoder_weights(encoder, weights, source=source, strict=strict)
    if extra:
        heads = sorted(k for k in extra if k.startswith("cls/"))
        others = sorted(k for k in extra if not k.startswith("cls/"))
        if heads:
            logger.info("%s: non-encoder weights returned in extra_weights: %s", source, ", ".join(heads))
        if others:
            logger.warning("%s: unexpected (non-BERT) variables returned in extra_weights: %s",
                           source, ", ".join(others))
    return Pretrained(cfg, encoder, vocab_file, lower_case, extra, fmt)


def _check_extra(extra_weights, encoder_names):
    extra = {}
    for k, v in (extra_weights or {}).items():
        if k in encoder_names:
            raise ValueError(f"extra_weights entry {k!r} clashes with an encoder weight name")
        extra[k] = np.ascontiguousarray(np.asarray(v))
    return extra


def save_pretrained(encoder, path, vocab_file, lower_case=True, extra_weights=None):
    """Write ``encoder`` (and optional extra weights, Google names) in the bert_tf format.

    ``path`` becomes a directory with ``bert_tf.json``, ``weights.safetensors`` and
    ``vocab.txt``; `from_pretrained` reads it back exactly.

    Example:

    >>> import os, tempfile, numpy as np
    >>> from bert_tf import BertConfig, BertEncoder, save_pretrained, from_pretrained
    >>> d = tempfile.mkdtemp()
    >>> vocab = os.path.join(d, "v.txt")
    >>> _ = open(vocab, "w").write("\\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a"]) + "\\n")
    >>> enc = BertEncoder(BertConfig(vocab_size=5, hidden_size=8, num_hidden_layers=1,
    ...                              num_attention_heads=2, intermediate_size=16))
    >>> _ = save_pretrained(enc, os.path.join(d, "m"), vocab)
    >>> p = from_pretrained(os.path.join(d, "m"))
    >>> p.format, bool(np.array_equal(p.encoder.embedding_table.numpy(), enc.embedding_table.numpy()))
    ('bert_tf', True)
    """
    if not os.path.isfile(vocab_file):
        raise FileNotFoundError(f"vocab file not found: {vocab_file}")
    os.makedirs(path, exist_ok=True)
    weights = get_encoder_weights(encoder)
    weights.update(_check_extra(extra_weights, weights))
    marker = os.path.join(path, OUR_MARKER)
    if os.path.exists(marker):
        os.remove(marker)  # the directory is incomplete until the marker is written again
    wpath = os.path.join(path, OUR_WEIGHTS)
    atomic.write_file(wpath, safetensors_save(weights))
    if os.path.abspath(vocab_file) != os.path.abspath(os.path.join(path, "vocab.txt")):
        shutil.copyfile(vocab_file, os.path.join(path, "vocab.txt"))
    meta = {"format": "bert_tf", "version": _FORMAT_VERSION, "config": encoder.config.to_dict(),
            "lower_case": bool(lower_case), "vocab_file": "vocab.txt", "weights_file": OUR_WEIGHTS}
    atomic.write_json(marker, meta)
    return path


def save_tf1_checkpoint(encoder, path_prefix, extra_weights=None, write_config=True, vocab_file=None):
    """Write a TF1 checkpoint with Google's variable names (``path_prefix.index/.data-*``).

    Readable by Google's BERT code (``tf.compat.v1.train.init_from_checkpoint``,
    ``tf.train.load_checkpoint``) and by `from_pretrained`. Also writes the
    ``checkpoint`` state file next to it and, with ``write_config``, a Google
    ``bert_config.json`` (``"gelu"`` for both GELU variants plus the exact variant
    under ``bert_tf_hidden_act``); ``vocab_file`` is copied as ``vocab.txt``.
    ``extra_weights`` (Google names, e.g. ``cls/predictions/output_bias``) are saved too.

    Example:

    >>> import os, tempfile, tensorflow as tf
    >>> from bert_tf import BertConfig, BertEncoder, save_tf1_checkpoint
    >>> enc = BertEncoder(BertConfig(vocab_size=5, hidden_size=8, num_hidden_layers=1,
    ...                              num_attention_heads=2, intermediate_size=16))
    >>> prefix = save_tf1_checkpoint(enc, os.path.join(tempfile.mkdtemp(), "bert_model.ckpt"))
    >>> dict(tf.train.list_variables(prefix))["bert/encoder/layer_0/attention/self/query/kernel"]
    [8, 8]
    """
    import tensorflow as tf

    weights = get_encoder_weights(encoder)
    weights.update(_check_extra(extra_weights, weights))
    out_dir = os.path.dirname(os.path.abspath(path_prefix))
    os.makedirs(out_dir, exist_ok=True)
    names = sorted(weights)
    tensors = [tf.constant(weights[n]) for n in names]
    tf.raw_ops.SaveV2(prefix=os.path.abspath(path_prefix), tensor_names=names,
                      shape_and_slices=[""] * len(names), tensors=tensors)
    base = os.path.basename(path_prefix)
    with open(os.path.join(out_dir, "checkpoint"), "w", encoding="utf-8") as f:
        f.write(f'model_checkpoint_path: "{base}"\nall_model_checkpoint_paths: "{base}"\n')
    if write_config:
        encoder.config.to_json_file(os.path.join(out_dir, "bert_config.json"), format="google")
    if vocab_file is not None:
        dst = os.path.join(out_dir, "vocab.txt")
        if os.path.abspath(vocab_file) != os.path.abspath(dst):
            shutil.copyfile(vocab_file, dst)
    return path_prefix
