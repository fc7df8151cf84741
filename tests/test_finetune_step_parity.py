"""The fine-tuning step against Hugging Face PyTorch, step by step: `bert_tf.training.Trainer` with our AdamW (bias
correction, torch's eps), the BERT schedule and global-norm clipping, on `BertMultiLabelClassifier` from the real
MiniLM weights, against `BertForSequenceClassification(problem_type="multi_label_classification")` with torch AdamW,
`get_linear_schedule_with_warmup` and `clip_grad_norm_` (the recipe of bench/hf_reference.py): same head weights, same
real CoNLL-2003 batches, dropout off on both sides (the one random part). The losses must agree at every step and the
trained models' probabilities at the end, so the update rule, weight-decay mask, schedule and clipping (engaged: the
clip norm is set below the gradients' norm) are HF's exactly. bench/finetune_parity.py runs the same comparison
for a full fine-tuning budget, with dropout too.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
import torch
import transformers

import bert_tf
from bert_tf.tasks.classification.multi_label_data import MultiLabelTextTask
from bert_tf.tasks.classification.multi_label_model import BertMultiLabelClassifier
from bert_tf.tasks.classification.multi_label_task import binary_cross_entropy
from bert_tf.training import Trainer
from bert_tf.training.optimization import create_optimizer
from fixtures import multi_label

STEPS, BATCH, SEQ, LR, CLIP = 24, 16, 48, 1e-4, 0.3


@pytest.fixture(scope="module")
def batches(tmp_path_factory):
    data = MultiLabelTextTask(multi_label.entity_types_dir(str(tmp_path_factory.mktemp("ml")), train=STEPS * BATCH,
                                                           dev=20, test=20))
    train = data.get_examples("train")
    y = np.array([[label in e.label for label in data.labels] for e in train], np.float32)
    order = np.random.default_rng(0).permutation(len(train)).reshape(STEPS, BATCH)
    return data.labels, [([train[i].text_a for i in rows], y[rows]) for rows in order]


def test_trainer_steps_equal_hugging_face(batches, minilm_dir, tmp_path):
    labels, steps = batches
    tokenizer = transformers.BertTokenizerFast.from_pretrained(minilm_dir)
    encoded = [tokenizer(texts, truncation=True, max_length=SEQ, padding="max_length", return_tensors="np")
               for texts, _ in steps]
    torch.manual_seed(0)
    hf = transformers.BertForSequenceClassification.from_pretrained(
        minilm_dir, num_labels=len(labels), problem_type="multi_label_classification")
    ours = BertMultiLabelClassifier(bert_tf.from_pretrained(minilm_dir).encoder, labels=labels)

    def features(enc):
        return {"input_word_ids": enc["input_ids"].astype("int32"), "input_mask": enc["attention_mask"].astype("int32"),
                "input_type_ids": enc["token_type_ids"].astype("int32")}

    ours(features(encoded[0]))
    ours.load_head_weights({"output_weights": hf.classifier.weight.detach().numpy(),
                            "output_bias": hf.classifier.bias.detach().numpy()})
    # ours: the Trainer, dropout off (training=False), loss per step recorded by a one-step loop
    ds = tf.data.Dataset.from_generator(lambda: ((features(e), y) for e, (_, y) in zip(encoded, steps)),
                                        output_signature=({k: tf.TensorSpec([BATCH, SEQ], tf.int32) for k in
                                                           ("input_word_ids", "input_mask", "input_type_ids")},
                                                          tf.TensorSpec([BATCH, len(labels)], tf.float32)))

    def compute_loss(model, batch, training):
        x, y = batch
        return binary_cross_entropy(y, model(x, training=False)), {}

    losses = []

    def record(line):  # the progress line of each one-step loop: "step k/N | loss x | ..."
        if "| loss " in line:
            losses.append(float(line.split("| loss ")[1].split()[0]))

    optimizer = create_optimizer("adamw", LR, STEPS, STEPS // 10, weight_decay=0.01, epsilon=1e-8,
                                 bias_correction=True)
    trainer = Trainer(ours, optimizer, compute_loss, model_dir=str(tmp_path / "run"), num_train_steps=STEPS,
                      steps_per_loop=1, save_checkpoints_steps=None, clip_norm=CLIP, global_batch_size=BATCH,
                      checkpoint_dataset_iterator=False, handle_sigterm=False,
                      print_fn=record)
    trainer.train(ds)
    # Hugging Face: the same steps, eval mode (no dropout), clipped at the same norm
    decayed = [[p for n, p in hf.named_parameters() if ("bias" in n or "LayerNorm" in n) == no] for no in (0, 1)]
    optimizer = torch.optim.AdamW([{"params": decayed[0], "weight_decay": 0.01},
                                   {"params": decayed[1], "weight_decay": 0.0}], lr=LR, eps=1e-8)
    schedule = transformers.get_linear_schedule_with_warmup(optimizer, STEPS // 10, STEPS)
    hf.eval()
    want, norms = [], []
    for enc, (_, y) in zip(encoded, steps):
        loss = hf(**{k: torch.tensor(v) for k, v in enc.items()}, labels=torch.tensor(y)).loss
        loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(hf.parameters(), CLIP)))
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        want.append(float(loss))
    assert sum(n > CLIP for n in norms) >= STEPS // 2, norms  # clipping is exercised
    assert len(losses) == STEPS
    np.testing.assert_allclose(losses, want, rtol=0, atol=2e-4)
    assert want[-1] < want[0] - 0.05  # it learned something
    probe = encoded[0]
    with torch.no_grad():
        hf_p = torch.sigmoid(hf(**{k: torch.tensor(v) for k, v in probe.items()}).logits).numpy()
    ours_p = keras.ops.convert_to_numpy(keras.ops.sigmoid(ours(features(probe), training=False)))
    np.testing.assert_allclose(ours_p, hf_p, atol=2e-4)
