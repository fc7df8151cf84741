"""Which custom (non-core TensorFlow) ops a SavedModel needs, and whether TF Serving has them.

TF Serving 2.12 to 2.19 link tensorflow-text 2.12.1's op library
(`//tensorflow_text:ops_lib`) and nothing else beyond core TensorFlow. A
SavedModel that uses any other custom op, e.g. `TFText>RoundRobinTrim` (linked
only from tensorflow-text 2.13 on, emitted by `RoundRobinTrimmer` and by
keras-hub's `MultiSegmentPacker(truncate="round_robin")`), loads in Python but
fails in those servers with "Op type not registered".

`TF_SERVING_CUSTOM_OPS` is the list of op names registered by tensorflow-text
2.12.1's `ops_lib` (read from the tensorflow/text repository at tag v2.12.1:
the `REGISTER_OP` / `REGISTER_TF_OP_SHIM` op definitions of every library in
`ops_lib`; `trimmer_ops` is not among them there).

Example:

>>> from bert_tf import check_serving_ops, list_custom_ops
>>> list_custom_ops("/path/to/saved_model")          # doctest: +SKIP
['FastBertNormalize', 'FastWordpieceTokenizeWithOffsets', 'NormalizeUTF8']
>>> check_serving_ops("/path/to/saved_model")        # doctest: +SKIP
['FastBertNormalize', 'FastWordpieceTokenizeWithOffsets', 'NormalizeUTF8']
"""

import os

# Custom ops linked into TF Serving 2.12+ (tensorflow-text 2.12.1 ops_lib).
TF_SERVING_CUSTOM_OPS = frozenset(
    {
        # normalize_ops
        "CaseFoldUTF8",
        "FindSourceOffsets",
        "NormalizeUTF8",
        "NormalizeUTF8WithOffsetsMap",
        # fast_bert_normalizer, fast_wordpiece_tokenizer
        "FastBertNormalize",
        "FastWordpieceTokenizeWithOffsets",
        "TFText>FastWordpieceDetokenize",
        # wordpiece_tokenizer, whitespace_tokenizer(_v2), regex_split_ops,
        # unicode_script_tokenizer, split_merge(_from_logits)_tokenizer
        "WordpieceTokenizeWithOffsets",
        "WhitespaceTokenizeWithOffsets",
        "TFText>WhitespaceTokenizeWithOffsetsV2",
        "RegexSplitWithOffsets",
        "UnicodeScriptTokenizeWithOffsets",
        "SplitMergeTokenizeWithOffsets",
        "TokenizerFromLogits",
        # sentencepiece_tokenizer, fast_sentencepiece_tokenizer
        "SentencepieceOp",
        "SentencepieceTokenizeOp",
        "SentencepieceTokenizeWithOffsetsOp",
        "SentencepieceDetokenizeOp",
        "SentencepieceVocabSizeOp",
        "SentencepieceIdToStringOp",
        "SentencepieceStringToIdOp",
        "TFText>FastSentencepieceTokenize",
        "TFText>FastSentencepieceDetokenize",
        # phrase_tokenizer, byte_splitter, boise_offset_converter, ngrams_op
        "PhraseTokenize",
        "TFText>PhraseDetokenize",
        "TFText>ByteSplitWithOffsets",
        "TFText>ByteSplitByOffsets",
        "TFText>OffsetsToBoiseTags",
        "TFText>BoiseTagsToOffsets",
        "TFText>NgramsStringJoin",
        # sentence_breaking_ops, state_based_sentence_breaker_op
        "SentenceFragments",
        "SentenceFragmentsV2",
        # constrained_sequence_op (greedy/viterbi), mst_ops, text_similarity_metric_ops
        "ConstrainedSequence",
        "MaxSpanningTree",
        "RougeL",
    }
)

# Hints for ops known to be missing from TF Serving 2.12-2.19.
_HINTS = {
    "TFText>RoundRobinTrim": (
        "emitted by tensorflow_text.RoundRobinTrimmer / keras-hub MultiSegmentPacker("
        "truncate='round_robin'); use bert_tf.BertPreprocessor packing, WaterfallTrimmer or "
        "ShrinkLongestTrimmer instead (TF Serving links it only from 2.20)"
    ),
    "TFText>RoundRobinGenerateMasks": "emitted by tensorflow_text.RoundRobinTrimmer.generate_mask",
}


class UnsupportedServingOpsError(ValueError):
    """A SavedModel uses custom ops that TF Serving 2.12+ does not link."""

    def __init__(self, saved_model_dir, disallowed):
        self.saved_model_dir = saved_model_dir
        self.disallowed = dict(disallowed)
        lines = [
            f"SavedModel {saved_model_dir!r} uses op(s) that TF Serving 2.12+ does not have "
            f"(it links core TensorFlow and tensorflow-text 2.12.1 only):"
        ]
        for op, where in sorted(self.disallowed.items()):
            hint = _HINTS.get(op)
            fns = ", ".join(sorted(where)[:3]) + (" ..." if len(where) > 3 else "")
            lines.append(f"  {op}  (in {fns})" + (f": {hint}" if hint else ""))
        super().__init__("\n".join(lines))


def _read_saved_model(saved_model_dir):
    from tensorflow.core.protobuf import saved_model_pb2

    path = str(saved_model_dir)
    if os.path.isdir(path):
        pb = os.path.join(path, "saved_model.pb")
        pbtxt = os.path.join(path, "saved_model.pbtxt")
    elif os.path.basename(path) in ("saved_model.pb", "saved_model.pbtxt"):
        pb, pbtxt = path, path
    else:
        raise FileNotFoundError(f"no SavedModel at {path!r} (not a directory)")
    sm = saved_model_pb2.SavedModel()
    if os.path.isfile(pb) and pb.endswith(".pb"):
        with open(pb, "rb") as f:
            sm.ParseFromString(f.read())
    elif os.path.isfile(pbtxt):
        from google.protobuf import text_format

        with open(pbtxt, "r", encoding="utf-8") as f:
            text_format.Parse(f.read(), sm)
    else:
        raise FileNotFoundError(f"no saved_model.pb or saved_model.pbtxt in {path!r}")
    return sm


def op_usage(saved_model_dir):
    """Every op type in any graph or function of the SavedModel ->
    set of places (`"graph"` or function names) where it occurs."""
    sm = _read_saved_model(saved_model_dir)
    usage = {}
    for mg in sm.meta_graphs:
        for node in mg.graph_def.node:
            usage.setdefault(node.op, set()).add("graph")
        for fn in mg.graph_def.library.function:
            for node in fn.node_def:
                usage.setdefault(node.op, set()).add(fn.signature.name)
    return usage


def _core_ops():
    import tensorflow as tf

    return set(dir(tf.raw_ops))


def _is_core(op, core):
    # Internal core ops (_Arg, _Retval, ...) are named with a leading underscore.
    return op in core or op.startswith("_")


def list_custom_ops(saved_model_dir):
    """Sorted names of all non-core-TensorFlow op types used anywhere in the
    SavedModel (its graph and every function in its library)."""
    core = _core_ops()
    return sorted(op for op in op_usage(saved_model_dir) if not _is_core(op, core))


def check_serving_ops(saved_model_dir, allowed=TF_SERVING_CUSTOM_OPS):
    """Raises `UnsupportedServingOpsError` naming every custom op of the
    SavedModel that is not in `allowed` (default: what TF Serving 2.12+ links)
    and where it is used; returns the sorted list of custom ops otherwise."""
    core = _core_ops()
    usage = op_usage(saved_model_dir)
    custom = sorted(op for op in usage if not _is_core(op, core))
    allowed = set(allowed)
    bad = {op: usage[op] for op in custom if op not in allowed}
    if bad:
        raise UnsupportedServingOpsError(str(saved_model_dir), bad)
    return custom
