r"""Benchmark serving.server against calling the SavedModel signature in-process.

Measures requests/s and p50/p99 latency of one-text Predict calls over gRPC at concurrency 1, 8
and 32, with server-side batching off and on, and compares with calling the same signature in this
process one text at a time ("in-process single") and `max_batch_size` texts at a time
("in-process batched", rows/s). Target: batching on at concurrency 32 reaches >= 0.8x the
in-process batched throughput.

Without --saved_model it exports a toy text classifier whose cost per text resembles a small BERT
(fixed 128 word positions, residual feed-forward blocks); give a BERT export to measure that:

    python bench/serving.py
    python bench/serving.py --saved_model=/tmp/bert_export/1 --signature_name=serving_default
"""

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

WORDS = ("the film was a long and quiet story about people who could not agree on anything at all "
         "yet it was moving funny dull bright sharp and sometimes very slow in the middle").split()


def sentences(n, seed=0):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(6, 30)))) for _ in range(n)]


def percentile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def summarize(name, n_items, seconds, latencies):
    return {"name": name, "items_per_s": n_items / seconds,
            "p50_ms": 1000 * percentile(latencies, 50), "p99_ms": 1000 * percentile(latencies, 99)}


def bench_in_process(fn, input_name, texts, batch_size, min_seconds):
    import tensorflow as tf

    feeds = [tf.constant(texts[i:i + batch_size]) for i in range(0, len(texts) - batch_size + 1, batch_size)]
    fn(**{input_name: feeds[0]})  # warm up
    lat, n, t0 = [], 0, time.perf_counter()
    i = 0
    while True:
        t = time.perf_counter()
        fn(**{input_name: feeds[i % len(feeds)]})
        lat.append(time.perf_counter() - t)
        n += batch_size
        i += 1
        if time.perf_counter() - t0 >= min_seconds and i >= 8:
            break
    return n, time.perf_counter() - t0, lat


def bench_server(address, model_name, signature, input_name, texts, concurrency, num_requests):
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    reqs = []
    for t in texts[:256]:
        r = predict_pb2.PredictRequest()
        r.model_spec.name, r.model_spec.signature_name = model_name, signature
        r.inputs[input_name].CopyFrom(tf.make_tensor_proto([t]))
        reqs.append(r)
    channels = [grpc.insecure_channel(address) for _ in range(min(concurrency, 8))]
    stubs = [prediction_service_pb2_grpc.PredictionServiceStub(c) for c in channels]
    for s in stubs:
        s.Predict(reqs[0], timeout=120)  # warm up connections
    lat, errors, lock = [], [], threading.Lock()
    counter = iter(range(num_requests))

    def worker(k):
        stub = stubs[k % len(stubs)]
        mine = []
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            t = time.perf_counter()
            try:
                stub.Predict(reqs[i % len(reqs)], timeout=300)
            except grpc.RpcError as e:
                errors.append(e.code())
            mine.append(time.perf_counter() - t)
        with lock:
            lat.extend(mine)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    for c in channels:
        c.close()
    if errors:
        raise RuntimeError(f"{len(errors)} failed requests, e.g. {errors[0]}")
    return num_requests, elapsed, lat


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--saved_model", help="SavedModel version dir (…/<N>) to serve; default: a toy model")
    p.add_argument("--signature_name", default="serving_default")
    p.add_argument("--input_name", default=None, help="string input to feed (default: the only input)")
    p.add_argument("--concurrency", default="1,8,32")
    p.add_argument("--num_requests", type=int, default=0, help="requests per server level (default: ~10 s)")
    p.add_argument("--max_batch_size", type=int, default=32)
    p.add_argument("--batch_timeout_micros", type=int, default=2000)
    p.add_argument("--num_batch_threads", type=int, default=1)
    p.add_argument("--min_seconds", type=float, default=4.0, help="time per in-process measurement")
    args = p.parse_args()

    import tensorflow as tf

    try:
        import tensorflow_text  # noqa: F401
    except ImportError:
        pass
    from serving.testing import ServerProcess
    from serving.toy_model import export_toy_model

    work = tempfile.mkdtemp(prefix="bench_serving_")
    try:
        base = os.path.join(work, "model")
        if args.saved_model:
            os.makedirs(base)
            os.symlink(os.path.abspath(args.saved_model), os.path.join(base, "1"))
            what = args.saved_model
        else:
            export_toy_model(os.path.join(base, "1"), width=256, token_layers=4, seq_length=128, buckets=5000)
            what = "toy text classifier (128 positions x 4 FFN blocks, width 256)"
        loaded = tf.saved_model.load(os.path.join(base, "1"))
        fn = loaded.signatures[args.signature_name]
        inputs = list(fn.structured_input_signature[1])
        input_name = args.input_name or (inputs[0] if len(inputs) == 1 else None)
        if input_name is None:
            sys.exit(f"signature {args.signature_name} has inputs {inputs}; pass --input_name")
        texts = sentences(2048)
        print(f"model: {what}; signature {args.signature_name}({input_name}); cpus: {os.cpu_count()}")
        def in_process(tag):
            out = []
            n, s, lat = bench_in_process(fn, input_name, texts, 1, args.min_seconds)
            out.append(summarize(f"in-process single (batch 1){tag}", n, s, lat))
            n, s, lat = bench_in_process(fn, input_name, texts, args.max_batch_size, args.min_seconds)
            out.append(summarize(f"in-process batched (batch {args.max_batch_size}){tag}", n, s, lat))
            return out

        # In-process figures are taken before and after the server runs (the machine is shared and
        # noisy); the ratio uses the better of the two, which is the conservative choice.
        rows = in_process(" [before]")
        params = os.path.join(work, "batching.config")
        with open(params, "w") as f:
            f.write(f"max_batch_size {{ value: {args.max_batch_size} }}\n"
                    f"batch_timeout_micros {{ value: {args.batch_timeout_micros} }}\n"
                    f"num_batch_threads {{ value: {args.num_batch_threads} }}\n"
                    "max_enqueued_batches { value: 1000 }\n")
        levels = [int(c) for c in args.concurrency.split(",")]
        batched_c32 = None
        for batching in (False, True):
            flags = ["--model_name=bench", f"--model_base_path={base}", "--grpc_max_threads=128"]
            if batching:
                flags += ["--enable_batching", f"--batching_parameters_file={params}"]
            with ServerProcess(flags, rest=False, ready_model="bench") as srv:
                for c in levels:
                    rate = max(r["items_per_s"] for r in rows[:2])
                    num = args.num_requests or int(min(4000, max(4 * c, 10 * rate)))
                    num = max(num, 4 * c)
                    n, s, lat = bench_server(srv.grpc_address, "bench", args.signature_name, input_name, texts, c,
                                             num)
                    rows.append(summarize(f"server batching {'on ' if batching else 'off'} c={c}", n, s, lat))
                    print(f"  {rows[-1]['name']}: {rows[-1]['items_per_s']:.1f} req/s", flush=True)
                    if batching and c == max(levels):
                        batched_c32 = rows[-1]["items_per_s"]
        rows += in_process(" [after]")
        inproc_single = max(r["items_per_s"] for r in rows if r["name"].startswith("in-process single"))
        inproc_batched = max(r["items_per_s"] for r in rows if r["name"].startswith("in-process batched"))
        print()
        print("latencies are per request; for in-process batched, per batch call")
        print(f"{'measurement':44s} {'items/s':>9s} {'p50 ms':>9s} {'p99 ms':>9s} {'vs in-proc batched':>19s}")
        for r in rows:
            print(f"{r['name']:44s} {r['items_per_s']:9.1f} {r['p50_ms']:9.2f} {r['p99_ms']:9.2f} "
                  f"{r['items_per_s'] / inproc_batched:18.2f}x")
        ratio = batched_c32 / inproc_batched
        print(f"\nserver with batching at c={max(levels)} / in-process batched throughput: {ratio:.2f}x "
              f"(target >= 0.8x: {'met' if ratio >= 0.8 else 'NOT met'}); "
              f"in-process batched / single: {inproc_batched / inproc_single:.2f}x")
        return ratio
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
