r"""Client for TF Serving's gRPC and REST APIs (works with tensorflow_model_server or serving.server).

Library:
    >>> from serving.client import ServingClient
    >>> c = ServingClient("localhost:8500", "bert")                          # doctest: +SKIP
    >>> out = c.predict(["a fine film", "a dull film"])                       # doctest: +SKIP
    >>> out["labels"], out["probabilities"]                                   # doctest: +SKIP
    >>> c.classify([{"text": "a fine film"}], signature_name="classify")      # doctest: +SKIP
    [[('negative', 0.1), ('positive', 0.9)]]
    >>> ServingClient("localhost:8501", "bert", rest=True).status()          # doctest: +SKIP

CLI (prints one line per text: with outputs named ``labels``/``probabilities``/``class_ids`` -- the
documented outputs of our exports -- the label and its score, otherwise every output; texts go to
the signature's only input, or split on ``--pair_separator`` across two; classify/regress send
them as the tf.Example feature ``--feature_name``, default ``text``):
    python -m serving.client --server=localhost:8500 --model_name=bert "a fine film" "a dull film"
    python -m serving.client --rest --server=localhost:8501 --model_name=bert "a fine film"
    python -m serving.client --server=localhost:8500 --model_name=bert --mode=classify "a fine film"
    python -m serving.client --model_name=bert --signature_name=predict_pairs "the cat ||| a cat"

Modules: `serving.grpc_client.GrpcClient` (official ``tensorflow_serving.apis`` stubs) and
`serving.rest_client.RestClient` (urllib), over the JSON tensor codec `serving.codec` that the server
uses too; `ServingClient` picks one. Errors from either transport are raised as
`ServingClientError` carrying the gRPC status code name (``NOT_FOUND``, ...). The only feature
names here are documented defaults of the CLI (``--feature_name=text`` for classify/regress).
"""

import os
import sys

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

if __package__ in (None, ""):  # `python serving/client.py`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from serving.errors import ServingClientError  # noqa: E402


def ServingClient(server="localhost:8500", model_name="default", rest=False, timeout=30.0, version=None,  # noqa: N802
                  max_message_bytes=64 << 20):
    """A `serving.grpc_client.GrpcClient` (default; server is host:8500) or, with `rest=True`, a
    `serving.rest_client.RestClient` (server is host:8501). Both have the same methods."""
    if rest:
        from serving.rest_client import RestClient

        return RestClient(server, model_name, timeout=timeout, version=version)
    from serving.grpc_client import GrpcClient

    return GrpcClient(server, model_name, timeout=timeout, version=version, max_message_bytes=max_message_bytes)


def _text(x):
    return x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x)


def format_predictions(texts, outputs):
    """One line per input: label and score when the outputs have `labels`/`probabilities`."""
    lines = []
    n = len(texts)
    probs = outputs.get("probabilities")
    labels = outputs.get("labels")
    for i in range(n):
        if labels is not None or probs is not None:
            p = None if probs is None else np.asarray(probs[i], dtype=float)
            if labels is not None:
                label = _text(labels[i])
            elif "class_ids" in outputs:
                label = str(int(outputs["class_ids"][i]))
            else:
                label = str(int(np.argmax(p)))
            score = "" if p is None else f"\tscore={float(np.max(p)):.4f}\tprobabilities=" + \
                "[" + ", ".join(f"{x:.4f}" for x in p.reshape(-1)) + "]"
            lines.append(f"{texts[i]}\t{label}{score}")
        else:
            parts = []
            for k in sorted(outputs):
                v = outputs[k][i] if getattr(outputs[k], "ndim", 0) else outputs[k]
                v = np.asarray(v)
                if v.dtype == object:
                    s = _text(v[()]) if v.ndim == 0 else str([_text(x) for x in v.reshape(-1)])
                elif v.size > 8:
                    s = f"<{v.dtype} {list(v.shape)}> {np.array2string(v.reshape(-1)[:8], precision=4)}..."
                else:
                    s = np.array2string(v, precision=4)
                parts.append(f"{k}={s}")
            lines.append(f"{texts[i]}\t" + "\t".join(parts))
    return lines


def main(argv=None):
    from absl import flags

    fl = flags.FlagValues()
    flags.DEFINE_string("server", None, "host:port (default localhost:8500, or localhost:8501 with --rest)",
                        flag_values=fl)
    flags.DEFINE_string("model_name", "default", "Model name.", flag_values=fl)
    flags.DEFINE_integer("model_version", None, "Version to address (default: newest).", flag_values=fl)
    flags.DEFINE_boolean("rest", False, "Use the REST API instead of gRPC.", flag_values=fl)
    flags.DEFINE_string("signature_name", None, "Signature (default: serving_default for predict, classify "
                        "for --mode=classify, regress for --mode=regress).", flag_values=fl)
    flags.DEFINE_enum("mode", "predict", ["predict", "classify", "regress", "metadata", "status"],
                      "Which API to call.", flag_values=fl)
    flags.DEFINE_string("input_name", None, "Predict input to feed the texts to (default: the signature's "
                        "only input; with two inputs, texts are split on --pair_separator).", flag_values=fl)
    flags.DEFINE_string("feature_name", "text", "tf.Example feature holding the text for classify/regress "
                        "(with pairs: <feature_name>_a / _b).", flag_values=fl)
    flags.DEFINE_string("pair_separator", "|||", "Separates the two texts of a pair.", flag_values=fl)
    flags.DEFINE_float("timeout", 30.0, "Seconds per call.", flag_values=fl)
    argv = list(sys.argv if argv is None else argv)
    if any(a in ("-h", "--help", "--helpfull") for a in argv[1:]):
        print(__doc__.split("Modules:")[0].rstrip() + "\n\nFlags:\n" + fl.get_help())
        return 0
    argv = fl(argv)
    texts = argv[1:]
    server = fl.server or ("localhost:8501" if fl.rest else "localhost:8500")
    client = ServingClient(server, fl.model_name, rest=fl.rest, timeout=fl.timeout, version=fl.model_version)
    try:
        if fl.mode == "status":
            for s in client.status():
                print(f"version {s['version']}\t{s['state']}\t{s['error_code']}\t{s['error_message']}")
            return 0
        if fl.mode == "metadata":
            for name, sig in sorted(client.metadata().items()):
                print(f"{name}: inputs={sig['inputs']} outputs={sig['outputs']}")
            return 0
        if not texts:
            print("error: give one or more texts to send", file=sys.stderr)
            return 2
        if fl.mode in ("classify", "regress"):
            sig = fl.signature_name if fl.signature_name is not None else fl.mode
            feats = []
            for t in texts:
                if fl.pair_separator in t:
                    a, b = (x.strip() for x in t.split(fl.pair_separator, 1))
                    feats.append({f"{fl.feature_name}_a": a, f"{fl.feature_name}_b": b})
                else:
                    feats.append({fl.feature_name: t})
            if fl.mode == "classify":
                for t, row in zip(texts, client.classify(feats, sig)):
                    best = max(row, key=lambda c: c[1]) if row else ("", 0.0)
                    print(f"{t}\t{best[0]}\tscore={best[1]:.4f}\t" +
                          ", ".join(f"{label}:{score:.4f}" for label, score in row))
            else:
                for t, v in zip(texts, client.regress(feats, sig)):
                    print(f"{t}\t{v:.4f}")
            return 0
        sig = fl.signature_name or "serving_default"
        if fl.input_name:
            inputs = {fl.input_name: texts}
        else:
            names = sorted(client.signature_inputs(sig))
            if len(names) == 1:
                inputs = {names[0]: texts}
            elif len(names) == 2:
                pairs = [t.split(fl.pair_separator, 1) + [""] for t in texts]
                inputs = {names[0]: [p[0].strip() for p in pairs], names[1]: [p[1].strip() for p in pairs]}
            else:
                print(f"error: signature {sig!r} takes {names}; use --input_name", file=sys.stderr)
                return 2
        outputs = client.predict(inputs, signature_name=sig)
        for line in format_predictions(texts, outputs):
            print(line)
        return 0
    except ServingClientError as e:
        print(f"error: {e.code}: {e.message}", file=sys.stderr)
        return 1
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
