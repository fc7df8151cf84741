"""TF Model Garden BERT checkpoints and TF Hub BERT encoder SavedModels, translated to Google's TF1 names.

* **Model Garden TF2 checkpoint** (``official.nlp``'s ``BertEncoder`` saved as ``tf.train.Checkpoint(encoder=...)``,
  what its ``tf2_bert_encoder_checkpoint_converter`` and training write; ``model=`` in older ones), with the
  ``bert_config.json`` beside it. Object-based names: ``encoder/layer_with_weights-0/embeddings`` (word),
  ``-1`` (position), ``-2`` (type), ``-3`` (embedding LayerNorm), ``-4`` .. ``-(3+L)`` (transformer layers:
  ``_attention_layer/_query_dense/kernel`` [H, heads, size], ..., ``_output_layer_norm/beta``), ``-(4+L)``
  (pooler). Read by `from_pretrained` (format ``"model_garden"``); ``"gelu"`` there is the tanh GELU.
* **TF Hub BERT encoder SavedModel** (the Model Garden's ``export_tfhub --export_type=model``: a dict of
  ``input_word_ids``/``input_mask``/``input_type_ids`` in; ``sequence_output``/``pooled_output`` out; vocab in
  ``assets/vocab.txt``, ``do_lower_case`` saved). Its variables are named ``word_embeddings/embeddings``,
  ``transformer/layer_N/self_attention/query/kernel``, ..., ``pooler_transform/kernel``; the config is read from
  their shapes. A SavedModel stores no activation name, so the encoder is built with the Model Garden's tanh GELU
  and LayerNorm epsilon 1e-12 and then **checked**: the SavedModel and the encoder run on the same probe input
  and must agree, otherwise loading is an error (an unknown signature or a differing architecture never loads
  silently wrong). Our own TF Hub-style export (`bert_tf.export.hub`: the same interface) carries its
  `BertConfig` as ``assets/bert_tf_config.json`` and our encoder's variable paths; it is read through those.

`save_model_garden_checkpoint` writes the first form (what the Model Garden's converter writes, under the same
object paths), with plain TensorFlow: a tree of `tf.Module`s whose attribute paths are those object paths, saved
by `tf.train.Checkpoint(encoder=...)`. The Model Garden restores it into its `BertEncoder` by object graph.
"""

import dataclasses
import os
import re
import shutil

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from bert_tf.model.config import GELU_TANH, BertConfig
from bert_tf.model.encoder import BertEncoder
from bert_tf.model.encoder_weights import Pretrained, check_google_bert, encoder_variable_map, get_encoder_weights
from bert_tf.text.tokenizer import load_vocab

OBJECT_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
CHECKPOINT_ROOTS = ("encoder", "model")  # tf.train.Checkpoint(encoder=...), and model= of older checkpoints
HUB_INPUTS = ("input_word_ids", "input_mask", "input_type_ids")
HUB_OUTPUTS = ("sequence_output", "pooled_output")
# A TF Hub BERT preprocess SavedModel (the Model Garden's ``export_tfhub --export_type=preprocessing``) tokenizes
# with tf-text's BertTokenizer: its WordPiece op, preceded by a CaseFoldUTF8 op exactly when it lower-cases.
WORDPIECE_OP = "WordpieceTokenizeWithOffsets"
CASE_FOLD_OP = "CaseFoldUTF8"
PROBE_TOLERANCE = 1e-4
OUR_CONFIG_ASSET = "bert_tf_config.json"  # in assets/ of our own TF Hub-style encoder export (bert_tf.export.hub)

# (Google name within layer_N, Model Garden checkpoint path within the layer, TF Hub SavedModel path)
_BLOCK = [
    *[(f"attention/self/{part}/{leaf}", f"_attention_layer/_{part}_dense/{leaf}", f"self_attention/{part}/{leaf}")
      for part in ("query", "key", "value") for leaf in ("kernel", "bias")],
    ("attention/output/dense/kernel", "_attention_layer/_output_dense/kernel",
     "self_attention/attention_output/kernel"),
    ("attention/output/dense/bias", "_attention_layer/_output_dense/bias", "self_attention/attention_output/bias"),
    ("attention/output/LayerNorm/gamma", "_attention_layer_norm/gamma", "self_attention_layer_norm/gamma"),
    ("attention/output/LayerNorm/beta", "_attention_layer_norm/beta", "self_attention_layer_norm/beta"),
    ("intermediate/dense/kernel", "_intermediate_dense/kernel", "intermediate/kernel"),
    ("intermediate/dense/bias", "_intermediate_dense/bias", "intermediate/bias"),
    ("output/dense/kernel", "_output_dense/kernel", "output/kernel"),
    ("output/dense/bias", "_output_dense/bias", "output/bias"),
    ("output/LayerNorm/gamma", "_output_layer_norm/gamma", "output_layer_norm/gamma"),
    ("output/LayerNorm/beta", "_output_layer_norm/beta", "output_layer_norm/beta"),
]
_EMBEDDINGS = [
    ("bert/embeddings/word_embeddings", "layer_with_weights-0/embeddings", "word_embeddings/embeddings"),
    ("bert/embeddings/position_embeddings", "layer_with_weights-1/embeddings", "position_embedding/embeddings"),
    ("bert/embeddings/token_type_embeddings", "layer_with_weights-2/embeddings", "type_embeddings/embeddings"),
    ("bert/embeddings/LayerNorm/gamma", "layer_with_weights-3/gamma", "embeddings/layer_norm/gamma"),
    ("bert/embeddings/LayerNorm/beta", "layer_with_weights-3/beta", "embeddings/layer_norm/beta"),
]


def to_google_shape(google_name, value):
    """Per-head attention shapes (``[H, heads, size]``, ``[heads, size]``, ``[heads, size, H]``) -> Google's 2-D/1-D."""
    if value.ndim == 3 and google_name.endswith("attention/output/dense/kernel"):
        return value.reshape(-1, value.shape[-1])
    if value.ndim == 3:
        return value.reshape(value.shape[0], -1)
    if value.ndim == 2 and "/attention/self/" in google_name and google_name.endswith("/bias"):
        return value.reshape(-1)
    return value


def name_map(num_layers, column):
    """``[(google name, Model Garden name)]``; ``column`` 1: checkpoint paths, 2: TF Hub SavedModel paths."""
    out = [(row[0], row[column]) for row in _EMBEDDINGS]
    for i in range(num_layers):
        prefix = f"layer_with_weights-{4 + i}/" if column == 1 else f"transformer/layer_{i}/"
        out += [(f"bert/encoder/layer_{i}/{row[0]}", prefix + row[column]) for row in _BLOCK]
    pooler = f"layer_with_weights-{4 + num_layers}/" if column == 1 else "pooler_transform/"
    out += [("bert/pooler/dense/kernel", pooler + "kernel"), ("bert/pooler/dense/bias", pooler + "bias")]
    return out


def _translate(values, num_layers, column, source, expected):
    missing = [name for _, name in name_map(num_layers, column) if name not in values]
    if missing:
        raise ValueError(f"{source}: not {expected}: {len(missing)} variable(s) missing, e.g. {missing[:3]}; "
                         f"found e.g. {sorted(values)[:5]}")
    return {g: to_google_shape(g, np.asarray(values[name], np.float32)) for g, name in name_map(num_layers, column)}


# --------------------------------------------------------------------------- Model Garden checkpoints


def is_object_checkpoint(names):
    """True for a TF2 object-based checkpoint (names ending ``/.ATTRIBUTES/VARIABLE_VALUE``)."""
    return any(name.endswith(OBJECT_SUFFIX) for name in names)


def checkpoint_weights(raw, source):
    """Google-named weights of a Model Garden BertEncoder checkpoint (dict name -> array, as read)."""
    stripped = {name[: -len(OBJECT_SUFFIX)]: value for name, value in raw.items() if name.endswith(OBJECT_SUFFIX)}
    root = next((r for r in CHECKPOINT_ROOTS if f"{r}/layer_with_weights-0/embeddings" in stripped), None)
    expected = ("a Model Garden BERT encoder checkpoint (tf.train.Checkpoint(encoder=BertEncoder): "
                "encoder/layer_with_weights-0/embeddings, ...)")
    if root is None:
        raise ValueError(f"{source}: a TF2 object-based checkpoint but {expected}; found e.g. {sorted(stripped)[:5]}")
    values = {name[len(root) + 1:]: v for name, v in stripped.items() if name.startswith(root + "/")}
    block = re.compile(r"layer_with_weights-(\d+)/_attention_layer/")
    layers = {int(m.group(1)) for name in values for m in [block.match(name)] if m}
    if not layers or layers != set(range(4, 4 + len(layers))):
        raise ValueError(f"{source}: {expected}; transformer layers found at positions {sorted(layers)} "
                         "(an embedding projection or another encoder type?)")
    return _translate(values, len(layers), 1, source, expected)


def _model_garden_shape(google_name, value, config):
    """Google's 2-D/1-D attention weights -> the Model Garden's per-head shapes (inverse of `to_google_shape`)."""
    heads, size = config.num_attention_heads, config.head_size
    if google_name.endswith("attention/output/dense/kernel"):
        return value.reshape(heads, size, value.shape[-1])
    if "/attention/self/" in google_name:
        return value.reshape(value.shape[0], heads, size) if value.ndim == 2 else value.reshape(heads, size)
    return value


def _object_tree(values):
    """A `tf.Module` tree holding ``values`` as variables at their object paths (``"a/b/c"``: ``root.a.b.c``)."""
    nodes = {"": tf.Module()}
    for path, value in values.items():
        parts = path.split("/")
        for depth in range(1, len(parts)):
            prefix = "/".join(parts[:depth])
            if prefix not in nodes:
                nodes[prefix] = tf.Module()
                setattr(nodes["/".join(parts[:depth - 1])], parts[depth - 1], nodes[prefix])
        setattr(nodes["/".join(parts[:-1])], parts[-1], tf.Variable(value, trainable=False))
    return nodes[""]


def save_model_garden_checkpoint(encoder, directory, vocab_file=None, allow_gelu_tanh=False):
    """Writes ``encoder`` as a Model Garden TF2 BERT checkpoint; returns its prefix ``<directory>/bert_model.ckpt-1``
    (the layout of the Model Garden's `tf2_bert_encoder_checkpoint_converter`).

    The Model Garden restores it with ``tf.train.Checkpoint(encoder=BertEncoder(...)).restore(prefix)``, the
    encoder built from the ``bert_config.json`` written beside it (``official.legacy.bert.configs.BertConfig``,
    ``export_tfhub_lib.get_bert_encoder``); ``vocab_file`` is copied as ``vocab.txt``; `from_pretrained` reads
    the directory back, and ``tf.train.latest_checkpoint(directory)`` finds the prefix.

    Args:
      encoder: a `BertEncoder`, or a `Pretrained` (its vocabulary is then written unless ``vocab_file`` is given).
      directory: where to write (created; an existing checkpoint of that name is replaced).
      allow_gelu_tanh: write an exact-GELU encoder although the Model Garden's BertEncoder computes the tanh GELU
        (``bert_config.json`` then says what the Model Garden computes: the tanh GELU).
    """
    if isinstance(encoder, Pretrained):
        vocab_file = vocab_file or encoder.vocab_file
        encoder = encoder.encoder
    if not isinstance(encoder, BertEncoder):
        raise TypeError(f"save_model_garden_checkpoint takes a BertEncoder or a Pretrained, "
                        f"got {type(encoder).__name__}")
    config = encoder.config
    check_google_bert(config, allow_gelu_tanh, "the Model Garden's BertEncoder", "--model_garden_allow_gelu_tanh")
    if vocab_file is not None and len(load_vocab(vocab_file)) != config.vocab_size:
        raise ValueError(f"{vocab_file}: {len(load_vocab(vocab_file))} tokens, the encoder's vocab_size is "
                         f"{config.vocab_size}")
    weights = get_encoder_weights(encoder)
    values = {path: _model_garden_shape(google_name, weights[google_name], config)
              for google_name, path in name_map(config.num_hidden_layers, 1)}
    os.makedirs(directory, exist_ok=True)
    # save(), as the Model Garden's converter: its save_counter is an object the Model Garden's own
    # tf.train.Checkpoint has, so restore(...).assert_existing_objects_matched() needs it; writes `checkpoint` too.
    prefix = tf.train.Checkpoint(**{CHECKPOINT_ROOTS[0]: _object_tree(values)}).save(
        os.path.join(os.path.abspath(directory), "bert_model.ckpt"))
    # Google's dialect, spelling what the Model Garden computes ("gelu": the tanh form).
    dataclasses.replace(config, hidden_act=GELU_TANH).to_json_file(
        os.path.join(directory, "bert_config.json"), format="google")
    if vocab_file is not None and os.path.abspath(vocab_file) != os.path.abspath(os.path.join(directory, "vocab.txt")):
        shutil.copyfile(vocab_file, os.path.join(directory, "vocab.txt"))
    return prefix


# --------------------------------------------------------------------------- TF Hub SavedModels


def is_saved_model(path):
    return os.path.isfile(os.path.join(path, "saved_model.pb"))


def _hub_config(values, source):
    layers = {int(m.group(1)) for name in values for m in [re.match(r"transformer/layer_(\d+)/", name)] if m}
    expected = ("a TF Hub BERT encoder SavedModel (Model Garden export_tfhub: word_embeddings/embeddings, "
                "transformer/layer_N/self_attention/..., pooler_transform/...)")
    if not layers or "word_embeddings/embeddings" not in values:
        raise ValueError(f"{source}: not {expected}; found variables e.g. {sorted(values)[:5]}")
    query = values["transformer/layer_0/self_attention/query/kernel"].shape
    config = BertConfig(
        vocab_size=values["word_embeddings/embeddings"].shape[0], hidden_size=query[0],
        num_hidden_layers=len(layers), num_attention_heads=query[1],
        intermediate_size=values["transformer/layer_0/intermediate/kernel"].shape[1], hidden_act=GELU_TANH,
        max_position_embeddings=values["position_embedding/embeddings"].shape[0],
        type_vocab_size=values["type_embeddings/embeddings"].shape[0], layer_norm_eps=1e-12)
    return config, _translate(values, len(layers), 2, source, expected)


def _hub_signature(loaded, source):
    """The SavedModel's serving function, checked to take and give what a TF Hub BERT encoder does."""
    expected = (f"a TF Hub BERT encoder: a dict of int32 {list(HUB_INPUTS)} [batch, seq] in, a dict with "
                f"{list(HUB_OUTPUTS)} out")
    function = loaded.signatures.get("serving_default") if hasattr(loaded, "signatures") else None
    if function is None:
        raise ValueError(f"{source}: no serving_default signature; expected {expected}")
    inputs = function.structured_input_signature[1]
    if sorted(inputs) != sorted(HUB_INPUTS):
        raise ValueError(f"{source}: signature inputs {sorted(inputs)}; expected {expected}")
    return function


def _our_export_weights(values, config, source):
    """Google-named weights of a bert_tf TF Hub-style export (`bert_tf.export.hub`), whose variables carry our
    encoder's variable paths (``embeddings/word_embeddings``, ``layer_0/qkv_kernel``, ...)."""
    encoder = BertEncoder(config)
    variables = [var for var, _ in encoder_variable_map(encoder)]
    missing = [var.path for var in variables if var.path not in values]
    if missing:
        raise ValueError(f"{source}: a bert_tf encoder export ({OUR_CONFIG_ASSET} in assets/) without "
                         f"{len(missing)} of its encoder's variables, e.g. {missing[:3]}; "
                         f"found e.g. {sorted(values)[:5]}")
    for var in variables:
        var.assign(values[var.path])
    return get_encoder_weights(encoder)


def _graph_ops(source):
    """Op types of a SavedModel's graph and of every function in its library."""
    saved = saved_model_pb2.SavedModel()
    with open(source, "rb") as f:
        saved.ParseFromString(f.read())
    ops = set()
    for graph in saved.meta_graphs:
        ops.update(node.op for node in graph.graph_def.node)
        for function in graph.graph_def.library.function:
            ops.update(node.op for node in function.node_def)
    return ops


def read_hub_preprocess(path):
    """``(vocab_file, lower_case)`` of a TF Hub BERT preprocess SavedModel (the Model Garden's preprocessing
    export, e.g. TF Hub's ``bert_en_uncased_preprocess``): its ``assets/vocab.txt``, and lower-casing when its
    tokenizer graph case-folds (the export keeps ``do_lower_case`` only as that op, not as a variable)."""
    source = os.path.join(path, "saved_model.pb")
    vocab_file = os.path.join(path, "assets", "vocab.txt")
    if not os.path.isfile(source) or not os.path.isfile(vocab_file):
        found = sorted(os.listdir(path)) if os.path.isdir(path) else "no such directory"
        raise ValueError(f"{path}: not a TF Hub BERT preprocess SavedModel (it needs saved_model.pb and "
                         f"assets/vocab.txt); found: {found}")
    ops = _graph_ops(source)
    if WORDPIECE_OP not in ops:
        raise ValueError(f"{source}: a SavedModel without tf-text's WordPiece tokenizer op ({WORDPIECE_OP}), so "
                         "not a BERT preprocess model whose casing can be read")
    return vocab_file, CASE_FOLD_OP in ops


def read_hub_encoder(path, preprocess_dir=None):
    """``(config, weights, vocab_file, lower_case, loaded)`` of a TF Hub BERT encoder SavedModel (the Model
    Garden's export, or ours: `bert_tf.export.hub`, recognised by its config asset). With ``preprocess_dir``
    (its matching preprocess SavedModel) the vocabulary and casing come from there."""
    source = os.path.join(path, "saved_model.pb")
    vocab_file = os.path.join(path, "assets", "vocab.txt")
    if preprocess_dir is not None:
        vocab_file, preprocess_lower_case = read_hub_preprocess(preprocess_dir)
    elif not os.path.isfile(vocab_file):
        raise ValueError(f"{path}: SavedModel without assets/vocab.txt (a WordPiece BERT encoder export holds it; "
                         f"else pass preprocess_dir=, its preprocess SavedModel); found: {sorted(os.listdir(path))}")
    loaded = tf.saved_model.load(path)
    _hub_signature(loaded, source)
    values = {v.name[: -len(":0")] if v.name.endswith(":0") else v.name: v.numpy() for v in loaded.variables}
    our_config = os.path.join(path, "assets", OUR_CONFIG_ASSET)
    if os.path.isfile(our_config):
        config = BertConfig.from_json_file(our_config)
        weights = _our_export_weights(values, config, source)
    else:
        config, weights = _hub_config(values, source)
    if len(load_vocab(vocab_file)) != config.vocab_size:
        raise ValueError(f"{vocab_file}: {len(load_vocab(vocab_file))} tokens, the encoder {path} has vocab_size "
                         f"{config.vocab_size}: not its matching vocabulary")
    if preprocess_dir is not None:
        return config, weights, vocab_file, preprocess_lower_case, loaded
    lower_case = bool(loaded.do_lower_case.numpy()) if hasattr(loaded, "do_lower_case") else None
    return config, weights, vocab_file, lower_case, loaded


def check_hub_outputs(loaded, encoder, source, seq_length=16):
    """Runs the SavedModel and ``encoder`` on one probe batch; an error if their outputs differ (the architecture
    or activation is not BERT's as the Model Garden builds it)."""
    config = encoder.config
    rng = np.random.default_rng(0)
    ids = rng.integers(1, config.vocab_size, size=(2, seq_length)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, seq_length // 2:] = 0
    inputs = {"input_word_ids": ids, "input_mask": mask, "input_type_ids": (np.arange(seq_length) >= 5)
              .astype(np.int32)[None].repeat(2, 0)}
    try:
        theirs = loaded({k: tf.constant(v) for k, v in inputs.items()}, training=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{source}: calling the SavedModel with {list(HUB_INPUTS)} failed ({e}); expected a TF Hub "
                         "BERT encoder") from None
    ours = encoder(inputs)
    for name in HUB_OUTPUTS:
        reference = theirs.get(name) if isinstance(theirs, dict) else None
        if reference is None:
            raise ValueError(f"{source}: no {name} output; expected a TF Hub BERT encoder's {list(HUB_OUTPUTS)}")
        diff = np.abs(np.where(mask[..., None] if name == "sequence_output" else 1,
                               ours[name].numpy() - reference.numpy(), 0)).max()
        if not diff < PROBE_TOLERANCE:
            raise ValueError(f"{source}: the SavedModel's {name} differs from a BERT encoder with its weights by "
                             f"{diff:.2e} (> {PROBE_TOLERANCE}): not a BERT encoder as the Model Garden builds it "
                             "(tanh GELU, LayerNorm epsilon 1e-12, post-LayerNorm)")
