"""Writes the .keras files that tests/test_legacy_keras.py loads: tiny task models saved by the code BEFORE the
one-folder-per-task layout (commit ba96aae), with their outputs on a few texts.

Run from a checkout of that commit (this file is not imported by anything):

    git worktree add /tmp/before ba96aae
    PYTHONPATH=/tmp/before .venv/bin/python tests/testdata/legacy_keras/make.py tests/testdata/legacy_keras
"""

import json
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import bert_tf  # noqa: E402

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "john", "lives", "in", "paris", "where", "does", "live",
         "the", "city", "is", "big", "good", "bad", "film", ".", "?", "##s"]
TEXTS = ["John lives in Paris.", "The city is big.", "good film", "bad films?"]
QUESTIONS = ["Where does John live?", "Where is the city?"]
CONTEXTS = ["John lives in Paris. The city is big.", "The city is big. John lives in Paris."]


def main(out):
    os.makedirs(out, exist_ok=True)
    vocab = os.path.join(out, "vocab.txt")
    with open(vocab, "w") as f:
        f.write("\n".join(WORDS) + "\n")
    keras.utils.set_random_seed(7)
    cfg = bert_tf.BertConfig(vocab_size=len(WORDS), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=32, max_position_embeddings=64)

    def encoder():
        return bert_tf.BertEncoder(cfg)

    expected = {}
    clf = bert_tf.BertClassifier(encoder(), bert_tf.BertPreprocessor(vocab, seq_length=16), num_classes=3,
                                 labels=["negative", "neutral", "positive"])
    expected["classifier"] = {"logits": np.asarray(clf(tf.constant(TEXTS))).tolist()}
    clf.save(os.path.join(out, "classifier.keras"))

    tagger = bert_tf.BertTokenTagger(encoder(), bert_tf.BertPreprocessor(vocab, seq_length=16),
                                     labels=["O", "B-LOC", "I-LOC", "B-PER", "I-PER"])
    tagged = tagger.tag_text(tf.constant(TEXTS))
    expected["tagger"] = {"tags": [[t.decode() for t in row] for row in tagged["tags"].numpy().tolist()],
                          "words": [[w.decode() for w in row] for row in tagged["words"].numpy().tolist()]}
    tagger.save(os.path.join(out, "tagger.keras"))

    qa = bert_tf.BertQuestionAnswerer(encoder(), bert_tf.BertPreprocessor(vocab, seq_length=32), max_query_length=12, doc_stride=8)
    answers = qa.answer(tf.constant(QUESTIONS), tf.constant(CONTEXTS))
    expected["question_answerer"] = {k: (np.char.decode(v.numpy().astype(bytes)).tolist() if v.dtype == tf.string
                                         else v.numpy().tolist()) for k, v in answers.items()}
    qa.save(os.path.join(out, "question_answerer.keras"))
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump({"texts": TEXTS, "questions": QUESTIONS, "contexts": CONTEXTS, "outputs": expected}, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
