"""The TF Hub-style preprocessing + encoder pair of SavedModels (for `tf.data` pipelines and TF Hub users).

`export_hub_style(preprocessor, encoder, export_dir)` writes the TF Hub-style
pair for `tf.data` pipelines: ``<export_dir>/preprocessing`` (callable on
strings; ``tokenize``; ``bert_pack_inputs(segments, seq_length)``) and
``<export_dir>/encoder`` with the interface of TF Hub's BERT encoders (the Model
Garden's ``export_tfhub``): called on the dict of ``input_word_ids``/``input_mask``/
``input_type_ids`` (int32 [batch, seq]) with ``training`` (dropout when fine-tuning) ->
``sequence_output``, ``pooled_output``, ``default`` (= pooled), ``encoder_outputs`` (list,
one per layer); ``trainable_variables`` (what ``hub.KerasLayer(..., trainable=True)``
fine-tunes); ``vocab_file`` (asset ``vocab.txt``) and ``do_lower_case`` for tokenizer setups
that read them. It also carries our `BertConfig` (``assets/bert_tf_config.json``), with which
`bert_tf.from_pretrained` reads it back. tests/test_model_garden.py checks it under
``tensorflow_hub.KerasLayer`` in the Model Garden's venv.
"""

import os
import shutil
import tempfile

import keras
import tensorflow as tf

from bert_tf import atomic
from bert_tf.export.serving_ops import check_serving_ops
from bert_tf.model.model_garden import HUB_INPUTS, OUR_CONFIG_ASSET

VOCAB_ASSET = "vocab.txt"

class _PreprocessingModule(tf.Module):
    """TF Hub-style preprocessing object: callable, `tokenize`, `bert_pack_inputs`."""

    def __init__(self, preprocessor):
        super().__init__(name="bert_preprocessing")
        pre = preprocessor
        strings = tf.TensorSpec([None], tf.string, name="text")
        self.__call__ = tf.function(lambda text: pre(text), input_signature=[strings])
        self.tokenize = tf.function(lambda text: pre.tokenize(text), input_signature=[strings])
        pack = tf.function(lambda segments, seq_length: pre.bert_pack_inputs(segments, seq_length))
        ragged = tf.RaggedTensorSpec([None, None], tf.int32, ragged_rank=1, row_splits_dtype=tf.int64)
        length = tf.TensorSpec([], tf.int32, name="seq_length")
        pack.get_concrete_function([ragged], length)
        pack.get_concrete_function([ragged, ragged], length)
        self.bert_pack_inputs = pack
        self.seq_length = tf.constant(pre.seq_length, tf.int32)
        self.vocab_size = tf.constant(pre.vocab_size, tf.int32)


def _write_encoder(encoder, preprocessor, path):
    """The encoder SavedModel with the TF Hub BERT encoder interface (see `export_hub_style`)."""
    archive = keras.export.ExportArchive()
    # Tracked, not only captured: TF Hub's KerasLayer(trainable=True) fine-tunes what `trainable_variables` lists.
    archive.track(encoder)
    spec = {k: tf.TensorSpec([None, None], tf.int32, name=k) for k in HUB_INPUTS}

    def run(inputs, training=False):
        out = encoder({k: inputs[k] for k in HUB_INPUTS}, training=training)
        return {"sequence_output": out["sequence_output"], "pooled_output": out["pooled_output"],
                "default": out["pooled_output"], "encoder_outputs": list(out["encoder_outputs"])}

    def serving_default(inputs):
        out = run(inputs)
        flat = {"sequence_output": out["sequence_output"], "pooled_output": out["pooled_output"]}
        for i, layer_out in enumerate(out["encoder_outputs"]):
            flat[f"encoder_outputs_{i}"] = layer_out
        return flat

    archive.add_endpoint("serving_default", serving_default, input_signature=[spec])
    root = archive._tf_trackable  # the archive's root object: its variables are tracked there
    # The root call returns encoder_outputs as a list (a signature cannot), and takes `training` as TF Hub's
    # encoders do (KerasLayer passes it: dropout when fine-tuning), so it is a plain function traced both ways.
    root.__call__ = tf.function(run)
    for training in (False, True):
        root.__call__.get_concrete_function(spec, training)
    # What TF Hub BERT encoders carry for their tokenizer (`resolved_object.vocab_file.asset_path`,
    # `.do_lower_case`), and our config, with which `from_pretrained` reads this export back.
    with tempfile.TemporaryDirectory() as assets:
        vocab_file = os.path.join(assets, VOCAB_ASSET)
        atomic.write_file(vocab_file, "".join(token + "\n" for token in preprocessor.vocabulary))
        config_file = os.path.join(assets, OUR_CONFIG_ASSET)
        encoder.config.to_json_file(config_file)
        root.vocab_file = tf.saved_model.Asset(vocab_file)
        root.bert_tf_config_file = tf.saved_model.Asset(config_file)
        root.do_lower_case = tf.Variable(bool(preprocessor.lower_case), trainable=False, name="do_lower_case")
        archive.write_out(path, verbose=False)


def export_hub_style(preprocessor, encoder, export_dir):
    """Writes ``<export_dir>/preprocessing`` and ``<export_dir>/encoder`` (TF Hub
    BERT conventions); returns the two paths.

    Use: ``pre = tf.saved_model.load(p); enc = tf.saved_model.load(e)``;
    ``enc(pre(tf.constant(["text"])))["pooled_output"]``; inside `Dataset.map`;
    ``pre.bert_pack_inputs([pre.tokenize(a), pre.tokenize(b)], seq_length=64)``;
    as Keras layers: ``keras.layers.TFSMLayer(p, call_endpoint="serving_default")``.
    """
    export_dir = os.path.abspath(os.fspath(export_dir))
    os.makedirs(export_dir, exist_ok=True)
    pre_dir = os.path.join(export_dir, "preprocessing")
    enc_dir = os.path.join(export_dir, "encoder")

    def write_pre(tmp):
        module = _PreprocessingModule(preprocessor)
        tf.saved_model.save(module, tmp, signatures={"serving_default": module.__call__})

    def write_enc(tmp):
        _write_encoder(encoder, preprocessor, tmp)

    for final, write in ((pre_dir, write_pre), (enc_dir, write_enc)):
        tmp = tempfile.mkdtemp(prefix=".tmp-", dir=export_dir)
        try:
            write(tmp)
            check_serving_ops(tmp)
            if os.path.exists(final):
                shutil.rmtree(final)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return pre_dir, enc_dir
