"""Fine-tuning step parity with Hugging Face PyTorch over a whole multi-label fine-tuning, same init and batches.

bench/multi_label.py compares the two sides as users run them (each side draws its own head, shuffles and drops
out with its own generators). This bench removes every difference but one: both sides start from the same MiniLM
weights and the same head (HF's torch draw, or ours from Keras with `--head=keras`), read the same batches in the
same order (tokenized by HF's tokenizer), with the same AdamW (bias correction, eps 1e-8, weight decay 0.01 without
LayerNorm/bias), 10% warmup and linear decay, and global-norm clipping at 1.0. Ours is our AdamW + the Trainer's
clipping (`prepare_optimizer`) in a plain `tf.function` step; HF's is bench/hf_reference.py's recipe.

* `--dropout=false`: nothing random is left; the losses must agree at every step and the test micro F1 exactly
  (tests/test_finetune_step_parity.py checks 24 steps of it in CI with the real Trainer).
* `--dropout=true`: the sides differ only in their dropout masks; several seeds show whether our training with
  dropout ends where HF's does.
* `--dropout --shared_masks`: both sides take the same dropout masks (fixtures/shared_dropout.py: drawn by numpy per
  step and call site; ours runs eagerly, HF with eager attention), so nothing random differs again and the losses
  must agree at every step with dropout on too.

    .venv/bin/python bench/finetune_parity.py --seeds 1,3 [--dropout [--shared_masks]] [--head keras] [--steps 375]
"""

import argparse
import contextlib
import io
import os
import sys
import tempfile

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

import bert_tf  # noqa: E402
import hf_reference  # noqa: E402
from bert_tf.tasks.classification import multi_label_metrics as mlm  # noqa: E402
from bert_tf.tasks.classification.multi_label_data import MultiLabelTextTask  # noqa: E402
from bert_tf.tasks.classification.multi_label_model import BertMultiLabelClassifier  # noqa: E402
from bert_tf.tasks.classification.multi_label_task import binary_cross_entropy  # noqa: E402
from bert_tf.training import optimization, train_step  # noqa: E402
from fixtures import datasets, multi_label  # noqa: E402
from fixtures.shared_dropout import shared_dropout_masks  # noqa: E402


def features(enc):
    return {"input_word_ids": enc["input_ids"].astype("int32"), "input_mask": enc["attention_mask"].astype("int32"),
            "input_type_ids": enc["token_type_ids"].astype("int32")}


def models(labels, seed, head, tok, texts, attention="sdpa"):
    """(ours, hf) with the same MiniLM weights and the same head (`head`: whose draw)."""
    torch.manual_seed(seed)
    hf = transformers.BertForSequenceClassification.from_pretrained(
        datasets.minilm_dir(), num_labels=len(labels), problem_type="multi_label_classification",
        attn_implementation=attention)
    keras.utils.set_random_seed(seed)
    ours = BertMultiLabelClassifier(bert_tf.from_pretrained(datasets.minilm_dir()).encoder, labels=labels)
    ours(features(tok(texts[:2], padding=True, return_tensors="np")))
    if head == "keras":
        w = ours.head_weights()
        with torch.no_grad():
            hf.classifier.weight.copy_(torch.tensor(w["output_weights"]))
            hf.classifier.bias.copy_(torch.tensor(w["output_bias"]))
    else:
        ours.load_head_weights({"output_weights": hf.classifier.weight.detach().numpy(),
                                "output_bias": hf.classifier.bias.detach().numpy()})
    return ours, hf


def train_ours(model, batches, spec, total, masks=None):
    """Our step on `batches`; with `masks` (shared dropout masks) it runs eagerly, as they are Python values."""
    optimizer = optimization.create_optimizer("adamw", spec.lr, total, int(total * 0.1), weight_decay=0.01,
                                              epsilon=1e-8, bias_correction=True)
    optimizer = train_step.prepare_optimizer(optimizer, tf.distribute.get_strategy(), None, 1.0)
    variables = model.trainable_variables

    def step(x, y):
        with tf.GradientTape() as tape:
            loss = binary_cross_entropy(y, model(x, training=spec.dropout))
        grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, variables)]  # dense, as the Trainer's
        optimizer.apply(grads, variables)
        return loss

    if masks is None:
        step = tf.function(step, reduce_retracing=True)
    losses = []
    for i, (x, y) in enumerate(batches):
        if masks is not None:
            masks.start(i)
        losses.append(float(step(features(x), tf.constant(y))))
    return losses


def train_hf(model, batches, spec, total, masks=None):
    """bench/hf_reference.py's loop on `batches`; `masks` (shared dropout masks) start each step."""
    def batches_fn(epoch):
        for i, (x, y) in enumerate(batches):
            if masks is not None:
                masks.start(i)
            yield {**{k: torch.tensor(v) for k, v in x.items()}, "labels": torch.tensor(y)}

    _, stats = hf_reference.train_loop(model, batches_fn, len(batches), spec.lr, eps=1e-8, dropout=spec.dropout,
                                       total_steps=total)
    return stats["losses"]


def probabilities(ours, hf, tok, texts, seq):
    o, h = [], []
    hf.eval()
    with torch.no_grad():
        for i in range(0, len(texts), 100):
            enc = tok(texts[i:i + 100], truncation=True, max_length=seq, padding=True, return_tensors="np")
            o.append(keras.ops.convert_to_numpy(keras.ops.sigmoid(ours(features(enc), training=False))))
            h.append(torch.sigmoid(hf(**{k: torch.tensor(v) for k, v in enc.items()}).logits).numpy())
    return np.concatenate(o), np.concatenate(h)


def run(seed, spec, data, tok):
    labels = data.labels
    with contextlib.redirect_stdout(io.StringIO()):
        train, test = data.get_examples("train"), data.get_examples("test")
    y = np.array([[label in e.label for label in labels] for e in train], np.float32)
    texts = [e.text_a for e in train]
    total = int(np.ceil(len(texts) / spec.batch)) * spec.epochs
    order = [rows for epoch in range(spec.epochs) for rows in hf_reference.shuffled(len(texts), seed, epoch, spec.batch)]
    batches = [(tok([texts[i] for i in rows], truncation=True, max_length=spec.seq_length, padding=True,
                    return_tensors="np"), y[rows]) for rows in order[:spec.steps or total]]
    ours, hf = models(labels, seed, spec.head, tok, texts, "eager" if spec.shared_masks else "sdpa")
    if spec.shared_masks:
        with shared_dropout_masks(1000 + seed) as ours_masks:
            ours_losses = train_ours(ours, batches, spec, total, ours_masks)
        with shared_dropout_masks(1000 + seed) as hf_masks:
            hf_losses = train_hf(hf, batches, spec, total, hf_masks)
        if ours_masks.calls != hf_masks.calls or not ours_masks.calls[0]:
            raise RuntimeError(f"the sides drew different dropout masks: {ours_masks.calls[0]} / {hf_masks.calls[0]}")
    else:
        ours_losses, hf_losses = train_ours(ours, batches, spec, total), train_hf(hf, batches, spec, total)
    p_ours, p_hf = probabilities(ours, hf, tok, [e.text_a for e in test], spec.seq_length)
    truth = np.array([[label in e.label for label in labels] for e in test], bool)
    gap = np.abs(np.array(ours_losses) - np.array(hf_losses))
    return {"seed": seed, "steps": len(batches), "max_loss_gap": float(gap.max()),
            "final_loss_ours": float(np.mean(ours_losses[-20:])), "final_loss_hf": float(np.mean(hf_losses[-20:])),
            "test_micro_f1_ours": mlm.micro_f1(p_ours >= 0.5, truth), "test_micro_f1_hf": mlm.micro_f1(p_hf >= 0.5, truth),
            "max_probability_gap": float(np.abs(p_ours - p_hf).max())}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="1,3")
    parser.add_argument("--dropout", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--shared_masks", action="store_true",
                        help="with --dropout: the same dropout masks on both sides (fixtures/shared_dropout.py)")
    parser.add_argument("--head", choices=("hf", "keras"), default="hf", help="whose head draw both sides start from")
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--seq_length", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--steps", type=int, default=0, help="stop after this many steps (0: all epochs)")
    spec = parser.parse_args()
    if spec.shared_masks and not spec.dropout:
        parser.error("--shared_masks needs --dropout")
    torch.set_num_threads(os.cpu_count() or 1)
    data = MultiLabelTextTask(multi_label.entity_types_dir(os.path.join(tempfile.mkdtemp(), "data"),
                                                           train=spec.train, dev=100, test=spec.test))
    tok = transformers.BertTokenizerFast.from_pretrained(datasets.minilm_dir())
    rows = [run(int(seed), spec, data, tok) for seed in spec.seeds.split(",")]
    dropout = "on, shared masks" if spec.shared_masks else "on" if spec.dropout else "off"
    print(f"\n| seed | steps | max loss gap | final loss ours / HF | test micro F1 at 0.5 ours / HF "
          f"(dropout {dropout}, {spec.head} head) |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['seed']} | {r['steps']} | {r['max_loss_gap']:.1e} | {r['final_loss_ours']:.4f} / "
              f"{r['final_loss_hf']:.4f} | {100 * r['test_micro_f1_ours']:.1f} / {100 * r['test_micro_f1_hf']:.1f} |")


if __name__ == "__main__":
    main()
