"""The fine-tuning step against Hugging Face PyTorch, step by step: `bert_tf.training.Trainer` with our AdamW (bias
correction, torch's eps), the BERT schedule and global-norm clipping, on `BertMultiLabelClassifier` from the real
MiniLM weights, against `BertForSequenceClassification(problem_type="multi_label_classification")` with torch AdamW,
`get_linear_schedule_with_warmup` and `clip_grad_norm_` (the recipe of bench/hf_reference.py): same head weights, same
real CoNLL-2003 batches, dropout off on both sides (the one random part). The losses must agree at every step and the
trained models' probabilities at the end, so the update rule, weight-decay mask, schedule and clipping (engaged: the
clip norm is set below the gradients' norm) are HF's exactly. With dropout on, the two sides draw different masks;
given the same masks (fixtures/shared_dropout.py) they must agree again, so our dropout sites, rates and scaling
are HF's too. bench/finetune_parity.py runs both comparisons for a full fine-tuning budget.
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
from bert_tf.training.train_step import prepare_optimizer
from fixtures import multi_label
from fixtures.shared_dropout import shared_dropout_masks

STEPS, BATCH, SEQ, LR, CLIP = 24, 16, 48, 1e-4, 0.3
DROPOUT_STEPS = 8


@pytest.fixture(scope="module")
def batches(tmp_path_factory):
    data = MultiLabelTextTask(multi_label.entity_types_dir(str(tmp_path_factory.mktemp("ml")), train=STEPS * BATCH,
                                                           dev=20, test=20))
    train = data.get_examples("train")
    y = np.array([[label in e.label for label in data.labels] for e in train], np.float32)
    order = np.random.default_rng(0).permutation(len(train)).reshape(STEPS, BATCH)
    return data.labels, [([train[i].text_a for i in rows], y[rows]) for rows in order]


def features(enc):
    return {"input_word_ids": enc["input_ids"].astype("int32"), "input_mask": enc["attention_mask"].astype("int32"),
            "input_type_ids": enc["token_type_ids"].astype("int32")}


def models_and_batches(batches, minilm_dir, attention="sdpa"):
    """(ours, hf, encoded batches): the real MiniLM weights on both sides, HF's head draw copied into ours."""
    labels, steps = batches
    tokenizer = transformers.BertTokenizerFast.from_pretrained(minilm_dir)
    encoded = [tokenizer(texts, truncation=True, max_length=SEQ, padding="max_length", return_tensors="np")
               for texts, _ in steps]
    torch.manual_seed(0)
    hf = transformers.BertForSequenceClassification.from_pretrained(
        minilm_dir, num_labels=len(labels), problem_type="multi_label_classification", attn_implementation=attention)
    ours = BertMultiLabelClassifier(bert_tf.from_pretrained(minilm_dir).encoder, labels=labels)
    ours(features(encoded[0]))
    ours.load_head_weights({"output_weights": hf.classifier.weight.detach().numpy(),
                            "output_bias": hf.classifier.bias.detach().numpy()})
    return ours, hf, encoded


def hf_optimizer(hf):
    """torch AdamW (no decay on biases and LayerNorm) and the linear warmup/decay schedule over STEPS."""
    decayed = [[p for n, p in hf.named_parameters() if ("bias" in n or "LayerNorm" in n) == no] for no in (0, 1)]
    optimizer = torch.optim.AdamW([{"params": decayed[0], "weight_decay": 0.01},
                                   {"params": decayed[1], "weight_decay": 0.0}], lr=LR, eps=1e-8)
    return optimizer, transformers.get_linear_schedule_with_warmup(optimizer, STEPS // 10, STEPS)


def hf_step(hf, optimizer, schedule, enc, y):
    """One HF step (clipped at CLIP) -> (loss, gradient norm before clipping)."""
    loss = hf(**{k: torch.tensor(v) for k, v in enc.items()}, labels=torch.tensor(y)).loss
    loss.backward()
    norm = float(torch.nn.utils.clip_grad_norm_(hf.parameters(), CLIP))
    optimizer.step()
    schedule.step()
    optimizer.zero_grad()
    return float(loss), norm


def test_trainer_steps_equal_hugging_face(batches, minilm_dir, tmp_path):
    labels, steps = batches
    ours, hf, encoded = models_and_batches(batches, minilm_dir)
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
    optimizer, schedule = hf_optimizer(hf)
    hf.eval()
    want, norms = [], []
    for enc, (_, y) in zip(encoded, steps):
        loss, norm = hf_step(hf, optimizer, schedule, enc, y)
        want.append(loss)
        norms.append(norm)
    assert sum(n > CLIP for n in norms) >= STEPS // 2, norms  # clipping is exercised
    assert len(losses) == STEPS
    np.testing.assert_allclose(losses, want, rtol=0, atol=2e-4)
    assert want[-1] < want[0] - 0.05  # it learned something
    probe = encoded[0]
    with torch.no_grad():
        hf_p = torch.sigmoid(hf(**{k: torch.tensor(v) for k, v in probe.items()}).logits).numpy()
    ours_p = keras.ops.convert_to_numpy(keras.ops.sigmoid(ours(features(probe), training=False)))
    np.testing.assert_allclose(ours_p, hf_p, atol=2e-4)


def test_dropout_steps_equal_hugging_face_with_shared_masks(batches, minilm_dir):
    """Dropout on, both sides given the same masks: our eager steps (our AdamW, clipping as the Trainer prepares
    it) against HF's in train mode with eager attention, step by step."""
    ours, hf, encoded = models_and_batches(batches, minilm_dir, attention="eager")
    steps = batches[1][:DROPOUT_STEPS]
    eval_loss = float(binary_cross_entropy(tf.constant(steps[0][1]), ours(features(encoded[0]), training=False)))
    optimizer = prepare_optimizer(create_optimizer("adamw", LR, STEPS, STEPS // 10, weight_decay=0.01, epsilon=1e-8,
                                                   bias_correction=True), tf.distribute.get_strategy(), None, CLIP)
    losses = []
    with shared_dropout_masks(seed=0) as ours_masks:
        for i, (enc, (_, y)) in enumerate(zip(encoded, steps)):
            ours_masks.start(i)
            with tf.GradientTape() as tape:
                loss = binary_cross_entropy(tf.constant(y), ours(features(enc), training=True))
            grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, ours.trainable_variables)]
            optimizer.apply(grads, ours.trainable_variables)
            losses.append(float(loss))
    optimizer, schedule = hf_optimizer(hf)
    hf.train()
    want = []
    with shared_dropout_masks(seed=0) as hf_masks:
        for i, (enc, (_, y)) in enumerate(zip(encoded, steps)):
            hf_masks.start(i)
            want.append(hf_step(hf, optimizer, schedule, enc, y)[0])
    # every dropout drew, alike on both sides: embeddings, 3 per layer, the classifier
    num_layers = len(ours.encoder.transformer_layers)
    assert ours_masks.calls == hf_masks.calls and len(ours_masks.calls[0]) == 2 + 3 * num_layers, ours_masks.calls[0]
    assert abs(losses[0] - eval_loss) > 3e-4  # dropout changed the loss (by 7.6e-4 at step 0)
    np.testing.assert_allclose(losses, want, rtol=0, atol=1e-4)
