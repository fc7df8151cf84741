"""Continued pretraining from a checkpoint without pretraining heads: fit the heads first, encoder frozen.

Sentence-transformers models and most fine-tuned checkpoints carry the encoder only, so continued pretraining
(`trainers/pretrain.py --init_checkpoint=...`) starts the MLM transform (dense + LayerNorm) and output bias random.
Their first gradients are large (global norm 5-6 on MiniLM-L6-H384) and flow into the pretrained encoder before the
head predicts anything. Measured by `bench/pretrain_transfer.py --sections 3` (MiniLM + MLM on in-domain tweets for
240 s, then fine-tuned on the tweets): without a warm-up the adapted model fine-tuned 4.4 points worse than MiniLM
directly; with the first 60 s spent on the heads alone, 1.0 point better on average, within the seed spread (the
README's "Does pretraining pay?" has the figures).

:func:`warm_up_heads` runs the shared `Trainer` with the encoder frozen (its own `model_dir`, so a killed warm-up
resumes there and a finished one is not redone); :func:`missing_heads` says which heads a checkpoint lacked.
"""

from __future__ import annotations

from bert_tf.training import Trainer


def missing_heads(model, loaded) -> list[str]:
    """Google names of `model`'s (a `BertPretrainer`) head weights that are not in `loaded` (what
    `load_head_weights` returned): those start from random init."""
    return [name for name in model.head_weights() if name not in set(loaded)]


def warm_up_heads(model, optimizer, compute_loss, model_dir, num_steps, train_dataset_fn=None, train_dataset=None,
                  **trainer_kwargs):
    """Trains only `model`'s pretraining heads for `num_steps` optimizer steps, the encoder frozen (its word
    embeddings too: the MLM output projection is tied to them), checkpointing in `model_dir`. Returns the `Trainer`
    result; a rerun after the warm-up finished trains nothing. The encoder is trainable again afterwards.

    `optimizer` is the warm-up's own (made under the strategy's scope); `trainer_kwargs` go to `Trainer`."""
    if num_steps <= 0:
        raise ValueError(f"head warm-up needs a positive number of steps, got {num_steps}")
    model.encoder.trainable = False
    try:
        trainer = Trainer(model, optimizer, compute_loss, model_dir=model_dir, num_train_steps=num_steps,
                          **trainer_kwargs)
        return trainer.train(train_dataset=train_dataset, train_dataset_fn=train_dataset_fn)
    finally:
        model.encoder.trainable = True
