"""Pretraining throughput: data creation, input pipeline, and the training step.

In one run, on the real pretraining corpus (fixtures.datasets: news + Wikipedia):
  1. create_pretraining_data instances/s (Google's rules, our streaming tool);
  2. the input pipeline alone (pretraining_dataset over those records) in
     examples/s, against what the training step consumes (target >= 10x);
  3. one training step, examples/s and model FLOPs utilisation (MFU: model
     FLOPs per example from bert_tf.training.flops, over this machine's
     measured matmul peak): our BertPretrainer MLM-only (what
     `pretrain.py --nonsp` trains: MLM head on the masked positions only, tied
     output embedding) and with NSP (Google's recipe), against keras-hub
     BertMaskedLM (also MLM on the masked positions) at the same size, batch and
     sequence length, each with its own default optimizer (ours: Google's
     AdamWeightDecay as pretrain.py builds it; keras-hub: keras Adam, what
     BertMaskedLM.compile() picks), and ours MLM-only with keras AdamW for a
     same-optimizer view; each step one tf.function (`--jit`: XLA-compiled,
     both sides), timed interleaved. Ours runs its last layer on the masked
     positions only (BertEncoder.last_layer_at); keras-hub's on all tokens.
     `--mixed_precision=mixed_bfloat16` (pretrain.py's flag of the same name; on
     this CPU it has AVX512-BF16): keras-hub 0.32's BertMaskedLM raises under it
     (its MaskedLMHead adds a float32 bias to bfloat16 logits), so the bench
     prints that error and times keras-hub twice: in float32 (what runs as
     shipped) and in bfloat16 with that one addition cast (patched here, for a
     ratio at equal precision); MFU is then over the bfloat16 matmul peak.

Usage: python bench/pretrain.py [--size mini|minilm] [--batch 32] [--steps 10] [--jit]
                                [--mixed_precision float32|mixed_bfloat16]
"""

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

SIZES = {  # layers, hidden, heads, intermediate
    "mini": (4, 256, 4, 1024),
    "minilm": (6, 384, 12, 1536),
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="mini", choices=sorted(SIZES))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--preds", type=int, default=20)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--documents", type=int, default=150)
    parser.add_argument("--jit", action="store_true", help="XLA-compile every training step (both sides)")
    parser.add_argument("--mixed_precision", default="float32", choices=["float32", "mixed_bfloat16"],
                        help="Keras dtype policy of every model (as pretrain.py --mixed_precision)")
    args = parser.parse_args()

    import keras_hub

    from bert_tf import BertConfig, BertEncoder
    from bert_tf.training.flops import bert_training_flops_per_example, measure_peak_flops
    from fixtures import datasets
    from bert_tf.pretraining.pretrainer import BertPretrainer, compute_loss, pretraining_dataset
    from bert_tf.pretraining.data import create_pretraining_data
    from bert_tf.training.optimization import create_optimizer

    vocab = os.path.join(datasets.minilm_dir(), "vocab.txt")
    work = tempfile.mkdtemp()
    text = open(datasets.pretraining_corpus_file(), encoding="utf-8").read()
    docs = [d for d in text.split("\n\n") if d.strip()][: args.documents]
    corpus = os.path.join(work, "corpus.txt")
    with open(corpus, "w", encoding="utf-8") as f:
        f.write("\n\n".join(docs) + "\n")
    records = os.path.join(work, "train.tfrecord")

    # 1. data creation
    t = time.perf_counter()
    counts = create_pretraining_data([corpus], [records], vocab, max_seq_length=args.seq,
                                     max_predictions_per_seq=args.preds, dupe_factor=2, verbose=False)
    sec = time.perf_counter() - t
    print(f"create_pretraining_data: {counts['documents']} documents -> {counts['instances']} instances "
          f"in {sec:.1f}s = {counts['instances'] / sec:.0f} instances/s")

    # 2. input pipeline alone
    ds = pretraining_dataset(records, args.batch, args.seq, args.preds, is_training=True, seed=1)
    it = iter(ds)
    next(it)
    n = 200
    t = time.perf_counter()
    for _ in range(n):
        next(it)
    pipe_rate = n * args.batch / (time.perf_counter() - t)

    # 3. training steps
    layers, hidden, heads, inter = SIZES[args.size]
    cfg = BertConfig(vocab_size=30522, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=inter, max_position_embeddings=512, type_vocab_size=2)
    batch = next(it)
    keras.mixed_precision.set_global_policy(args.mixed_precision)

    def our_step(next_sentence, keras_adamw=False):
        model = BertPretrainer(BertEncoder(cfg), next_sentence=next_sentence)
        model(batch)
        opt = keras.optimizers.AdamW(1e-4) if keras_adamw else create_optimizer("adamw", 1e-4, 1000, 100)

        @tf.function(jit_compile=args.jit)
        def step(b):
            with tf.GradientTape() as tape:
                loss, _ = compute_loss(model, b, True)
            grads = tape.gradient(loss, model.trainable_variables)  # MLM only: the pooler's are None (skipped)
            opt.apply_gradients(zip(grads, model.trainable_variables))
            return loss

        return lambda: step(batch)

    kh_inputs = {"token_ids": batch["input_ids"], "segment_ids": batch["segment_ids"],
                 "padding_mask": tf.cast(batch["input_mask"], tf.bool), "mask_positions": batch["masked_lm_positions"]}

    def keras_hub_step(policy):
        backbone = keras_hub.models.BertBackbone(vocabulary_size=30522, num_layers=layers, num_heads=heads,
                                                 hidden_dim=hidden, intermediate_dim=inter, max_sequence_length=512,
                                                 dtype=policy)
        kh = keras_hub.models.BertMaskedLM(backbone, dtype=policy)
        kh(kh_inputs)
        opt_kh = keras.optimizers.Adam(1e-4)  # BertMaskedLM.compile()'s default optimizer (at lr 5e-5)

        @tf.function(jit_compile=args.jit)
        def step(x, ids, w):
            with tf.GradientTape() as tape:
                logits = tf.cast(kh(x, training=True), tf.float32)
                nll = keras.losses.sparse_categorical_crossentropy(ids, logits, from_logits=True)
                loss = tf.reduce_sum(nll * w) / (tf.reduce_sum(w) + 1e-5)
            grads = tape.gradient(loss, kh.trainable_variables)
            opt_kh.apply_gradients(zip(grads, kh.trainable_variables))
            return loss

        return lambda: step(kh_inputs, batch["masked_lm_ids"], batch["masked_lm_weights"])

    ours_name, kh_name = "bert_tf BertPretrainer (MLM only)", "keras-hub BertMaskedLM (MLM)"
    same_opt_name = "bert_tf BertPretrainer (MLM only), keras AdamW"
    runs = {ours_name: our_step(False), "bert_tf BertPretrainer (MLM+NSP)": our_step(True),
            same_opt_name: our_step(False, keras_adamw=True)}
    if args.mixed_precision == "float32":
        runs[kh_name] = keras_hub_step("float32")
    else:
        try:
            step = keras_hub_step(args.mixed_precision)
            step()
            runs[kh_name] = step
        except (tf.errors.InvalidArgumentError, TypeError, ValueError) as e:
            print(f"keras-hub BertMaskedLM under {args.mixed_precision} raises: {str(e).splitlines()[0][:160]}")
            runs[kh_name + " float32, as shipped"] = keras_hub_step("float32")
            _cast_masked_lm_bias(keras_hub)
            kh_name += " bf16, bias cast (patched)"
            runs[kh_name] = keras_hub_step(args.mixed_precision)
    for fn in runs.values():
        fn()  # trace
    best = {k: float("inf") for k in runs}
    for _ in range(args.reps):
        for name, fn in runs.items():
            t = time.perf_counter()
            for _ in range(args.steps):
                float(fn())
            best[name] = min(best[name], (time.perf_counter() - t) / args.steps)
    peaks = {p: measure_peak_flops(p) for p in ("float32", "bfloat16")}
    print(f"\ntraining step, size {args.size} (L{layers} H{hidden}), batch {args.batch}, seq {args.seq}, "
          f"{args.preds} predictions, XLA {'on' if args.jit else 'off'}, {args.mixed_precision}; measured matmul "
          f"peak float32 {peaks['float32'] / 1e9:.1f}, bfloat16 {peaks['bfloat16'] / 1e9:.1f} GFLOP/s")
    for name, sec in best.items():
        flops = bert_training_flops_per_example(cfg, args.seq, args.preds, next_sentence="NSP" in name,
                                                whole_last_layer=name.startswith("keras-hub"))
        rate = args.batch / sec
        peak = peaks["float32" if args.mixed_precision == "float32" or "float32" in name else "bfloat16"]
        print(f"  {name:52s} {rate:8.1f} examples/s  MFU {100 * rate * flops / peak:5.1f}%")
    for name in best:
        if name.startswith("keras-hub"):
            print(f"  ratio ours (MLM only) / {name} = {best[name] / best[ours_name]:.2f}x (target >= 1.2x); "
                  f"ours with keras AdamW: {best[name] / best[same_opt_name]:.2f}x")
    ours_rate = args.batch / best[ours_name]
    print(f"\ninput pipeline alone: {pipe_rate:.0f} examples/s = {pipe_rate / ours_rate:.1f}x what the "
          f"training step consumes (target >= 10x)")


def _cast_masked_lm_bias(keras_hub):
    """Lets keras-hub's MaskedLMHead run in bfloat16: its bias is handed to its call cast to the compute dtype
    (as shipped, float32 bias + bfloat16 logits is an error in TensorFlow); gradients flow through the cast."""
    head_class = keras_hub.layers.MaskedLMHead
    call = head_class.call

    def cast_call(self, inputs, mask_positions):  # call()'s own argument names: Keras builds by them
        bias = self._bias
        object.__setattr__(self, "_bias", keras.ops.cast(bias, self.compute_dtype))  # not tracked: a view
        try:
            return call(self, inputs, mask_positions)
        finally:
            object.__setattr__(self, "_bias", bias)

    head_class.call = cast_call


if __name__ == "__main__":
    main()
