"""Bench: bert_tf vs keras-hub on the same MiniLM preset, both directions, on real sentences.

* keras-hub -> bert_tf: keras-hub's own converter makes a preset of MiniLM (`BertBackbone.from_preset` on the
  Hugging Face directory, `save_to_preset`); `bert_tf.from_pretrained` reads it. Max |difference| of
  sequence_output (real tokens) and pooled_output against keras-hub's backbone; token ids of our tokenizer vs
  keras-hub's tokenizer of that preset (it keeps accents: `strip_accents=False`).
* bert_tf -> keras-hub: `bert_tf.save_keras_hub_preset`; keras-hub loads it; the same comparisons (that preset
  strips accents when lower-casing, as Google's rule does).
* The GELU keras-hub imposes: MiniLM with its own exact GELU (Hugging Face) vs the tanh GELU of every keras-hub
  BERT: max |difference| of sequence_output and the cosine of the sentence embeddings (mean pooling, what
  all-MiniLM-L6-v2 serves).

Usage: python bench/keras_hub_presets.py [--sentences 2000] [--batch 64] [--forward_sentences 512]
"""

import argparse
import dataclasses
import os
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras_hub  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import bert_tf  # noqa: E402
from bert_tf.model.encoder import mean_pool  # noqa: E402
from fixtures.datasets import minilm_dir, real_sentences  # noqa: E402


def token_agreement(preprocessor, keras_hub_tokenizer, texts):
    """Sentences whose ids are equal, and the first differing sentence."""
    ours = preprocessor.tokenize(tf.constant(texts)).to_list()
    theirs = [[int(i) for i in row] for row in keras_hub_tokenizer(tf.constant(texts))]
    differing = [t for t, a, b in zip(texts, ours, theirs) if a != b]
    return len(texts) - len(differing), differing[:1]


def forward_differences(encoder, backbone, preprocessor, texts, batch):
    """Max |ours - keras-hub| of sequence_output (real tokens) and pooled_output over batches of texts."""
    seq_diff = pooled_diff = 0.0
    for i in range(0, len(texts), batch):
        x = preprocessor(tf.constant(texts[i:i + batch]))
        ours = encoder(x)
        theirs = backbone({"token_ids": x["input_word_ids"], "segment_ids": x["input_type_ids"],
                           "padding_mask": x["input_mask"]})
        mask = x["input_mask"].numpy()[..., None].astype(bool)
        seq = np.where(mask, ours["sequence_output"].numpy() - np.asarray(theirs["sequence_output"]), 0.0)
        seq_diff = max(seq_diff, float(np.abs(seq).max()))
        pooled = ours["pooled_output"].numpy() - np.asarray(theirs["pooled_output"])
        pooled_diff = max(pooled_diff, float(np.abs(pooled).max()))
    return seq_diff, pooled_diff


def gelu_switch(exact, tanh, preprocessor, texts, batch):
    """Max |exact - tanh| of sequence_output and the lowest cosine of their mean-pooled sentence embeddings."""
    seq_diff, lowest_cosine = 0.0, 1.0
    for i in range(0, len(texts), batch):
        x = preprocessor(tf.constant(texts[i:i + batch]))
        a, b = exact(x)["sequence_output"], tanh(x)["sequence_output"]
        mask = x["input_mask"].numpy()[..., None].astype(bool)
        seq_diff = max(seq_diff, float(np.abs(np.where(mask, a.numpy() - b.numpy(), 0.0)).max()))
        ea = tf.math.l2_normalize(mean_pool(a, x["input_mask"]), -1)
        eb = tf.math.l2_normalize(mean_pool(b, x["input_mask"]), -1)
        lowest_cosine = min(lowest_cosine, float(tf.reduce_min(tf.reduce_sum(ea * eb, -1))))
    return seq_diff, lowest_cosine


def report(direction, preprocessor, encoder, preset, texts, forward_texts, batch):
    backbone = keras_hub.models.BertBackbone.from_preset(preset)
    tokenizer = keras_hub.models.BertTokenizer.from_preset(preset)
    equal, first = token_agreement(preprocessor, tokenizer, texts)
    start = time.perf_counter()
    seq_diff, pooled_diff = forward_differences(encoder, backbone, preprocessor, forward_texts, batch)
    print(f"{direction}: token ids equal on {equal}/{len(texts)} sentences"
          + (f" (first difference: {first[0]!r})" if first else ""), flush=True)
    print(f"{direction}: max |bert_tf - keras-hub| over {len(forward_texts)} sentences: sequence_output "
          f"{seq_diff:.2e}, pooled_output {pooled_diff:.2e} ({time.perf_counter() - start:.0f} s)", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=2000)
    parser.add_argument("--forward_sentences", type=int, default=512)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    texts = real_sentences(args.sentences)
    forward_texts = texts[:args.forward_sentences]
    hf_dir = minilm_dir()
    work = tempfile.mkdtemp(prefix="bench_keras_hub_")

    keras_hub_made = os.path.join(work, "keras_hub_made")
    keras_hub.models.BertBackbone.from_preset(hf_dir).save_to_preset(keras_hub_made)
    keras_hub.models.BertTokenizer.from_preset(hf_dir).save_to_preset(keras_hub_made)
    read = bert_tf.from_pretrained(keras_hub_made)
    preprocessor = bert_tf.BertPreprocessor(read.vocab_file, lower_case=read.lower_case, seq_length=128)
    report("keras-hub preset -> bert_tf", preprocessor, read.encoder, keras_hub_made, texts, forward_texts,
           args.batch)

    exact = bert_tf.from_pretrained(hf_dir)
    tanh = bert_tf.from_pretrained(hf_dir, config=dataclasses.replace(exact.config, hidden_act="gelu_tanh"))
    written = bert_tf.save_keras_hub_preset(tanh, os.path.join(work, "bert_tf_made"))
    report("bert_tf -> keras-hub preset", preprocessor, tanh.encoder, written, texts, forward_texts, args.batch)

    seq_diff, cosine = gelu_switch(exact.encoder, tanh.encoder, preprocessor, forward_texts, args.batch)
    print(f"MiniLM exact GELU (its own) vs tanh GELU (keras-hub's): max |sequence_output difference| {seq_diff:.2e}, "
          f"lowest cosine of mean-pooled sentence embeddings {cosine:.6f} over {len(forward_texts)} sentences",
          flush=True)


if __name__ == "__main__":
    main()
