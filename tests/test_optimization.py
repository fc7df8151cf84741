"""bert_tf.training.optimization against NumPy implementations of the published update rules.

References (written here from the rules, not from any implementation):
* Google BERT's AdamWeightDecayOptimizer: m, v moving averages without bias
  correction, update = m / (sqrt(v) + 1e-6) + 0.01 * w for variables whose name has
  no "LayerNorm"/"layer_norm"/"bias", w -= lr * update; gradients clipped to global
  norm 1.0 first; lr = linear warmup, then polynomial (power 1) decay to 0.
* AdamW (Loshchilov & Hutter) with Adam's bias correction.
* LAMB (You et al. 2019): bias-corrected Adam direction plus weight decay, scaled by
  the trust ratio ||w|| / ||update|| (1 if either norm is 0).
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from bert_tf.training.optimization import DEFAULT_EXCLUDE, AdamWeightDecay, Lamb, WarmupLinearDecay, create_optimizer  # noqa: E402

SHAPES = {"encoder/layer_0/dense/kernel": (5, 3), "encoder/layer_0/dense/bias": (3,),
          "encoder/layer_0/output/LayerNorm/gamma": (3,), "embeddings/word": (7, 3)}
DECAYED = {"encoder/layer_0/dense/kernel": True, "encoder/layer_0/dense/bias": False,
           "encoder/layer_0/output/LayerNorm/gamma": False, "embeddings/word": True}


def google_lr(step, peak, total, warmup):
    """Google's schedule: polynomial_decay(power=1) from step 0, warmup overrides."""
    decayed = peak * (1.0 - min(step, total) / total)
    if step < warmup:
        return peak * step / warmup
    return decayed


def clip_global(grads, clip):
    norm = np.sqrt(sum((g.astype(np.float64) ** 2).sum() for g in grads))
    return [g * clip / max(norm, clip) for g in grads]


def np_adam_weight_decay(weights, grad_seq, lrs, decay=0.01, b1=0.9, b2=0.999, eps=1e-6,
                         bias_correction=False, clip=None):
    w = {k: v.astype(np.float64).copy() for k, v in weights.items()}
    m = {k: np.zeros_like(v) for k, v in w.items()}
    v2 = {k: np.zeros_like(v) for k, v in w.items()}
    for t, (grads, lr) in enumerate(zip(grad_seq, lrs), start=1):
        keys = list(w)
        gl = [grads[k].astype(np.float64) for k in keys]
        if clip:
            gl = clip_global(gl, clip)
        for k, g in zip(keys, gl):
            m[k] = b1 * m[k] + (1 - b1) * g
            v2[k] = b2 * v2[k] + (1 - b2) * g * g
            mh, vh = m[k], v2[k]
            if bias_correction:
                mh, vh = mh / (1 - b1 ** t), vh / (1 - b2 ** t)
            upd = mh / (np.sqrt(vh) + eps)
            if DECAYED[k]:
                upd = upd + decay * w[k]
            w[k] = w[k] - lr * upd
    return w


def np_lamb(weights, grad_seq, lrs, decay=0.01, b1=0.9, b2=0.999, eps=1e-6):
    w = {k: v.astype(np.float64).copy() for k, v in weights.items()}
    m = {k: np.zeros_like(v) for k, v in w.items()}
    v2 = {k: np.zeros_like(v) for k, v in w.items()}
    for t, (grads, lr) in enumerate(zip(grad_seq, lrs), start=1):
        for k in w:
            g = grads[k].astype(np.float64)
            m[k] = b1 * m[k] + (1 - b1) * g
            v2[k] = b2 * v2[k] + (1 - b2) * g * g
            upd = (m[k] / (1 - b1 ** t)) / (np.sqrt(v2[k] / (1 - b2 ** t)) + eps)
            ratio = 1.0
            if DECAYED[k]:
                upd = upd + decay * w[k]
                wn, un = np.linalg.norm(w[k]), np.linalg.norm(upd)
                ratio = wn / un if wn > 0 and un > 0 else 1.0
            w[k] = w[k] - lr * ratio * upd
    return w


class _Holder(keras.layers.Layer):
    """A layer owning variables at chosen paths (so exclusion by path is exercised)."""

    def __init__(self, init, **kw):
        super().__init__(name="holder", **kw)
        self.vs = {}
        for path, value in init.items():
            self.vs[path] = keras.Variable(value, name=path.rsplit("/", 1)[-1])
            # give each variable its full path, as layers nested that way would
            self.vs[path]._path = path


def _run_optimizer(opt, init, grad_seq):
    holder = _Holder(init)
    variables = [holder.vs[k] for k in init]
    for grads in grad_seq:
        opt.apply([tf.constant(grads[k]) for k in init], variables)
    return {k: keras.ops.convert_to_numpy(holder.vs[k]) for k in init}


def _problem(steps=8, seed=0, scale=1.0):
    rng = np.random.RandomState(seed)
    init = {k: rng.randn(*s).astype("float32") for k, s in SHAPES.items()}
    grads = [{k: (scale * rng.randn(*s)).astype("float32") for k, s in SHAPES.items()}
             for _ in range(steps)]
    return init, grads


def test_paths_are_seen_by_exclusion_rules():
    init, _ = _problem()
    holder = _Holder(init)
    opt = AdamWeightDecay(1e-3)
    opt.build([holder.vs[k] for k in init])
    assert {k: opt.uses_weight_decay(holder.vs[k]) for k in init} == DECAYED


def test_adam_weight_decay_matches_google_rule_with_schedule_and_clipping():
    steps, peak, warm = 8, 0.01, 3
    init, grads = _problem(steps, scale=3.0)  # global norm >> 1: clipping is active
    opt = create_optimizer("adamw", peak, num_train_steps=steps, num_warmup_steps=warm,
                           decay_from_zero=True)
    opt.global_clipnorm = 1.0  # what Trainer(clip_norm=1.0) sets
    got = _run_optimizer(opt, init, grads)
    lrs = [google_lr(t, peak, steps, warm) for t in range(steps)]
    want = np_adam_weight_decay(init, grads, lrs, clip=1.0)
    for k in init:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6, err_msg=k)
    # without bias correction the first step is not the Adam "lr * sign(g)" step
    assert not np.allclose(got["encoder/layer_0/dense/bias"], init["encoder/layer_0/dense/bias"])


def test_adamw_with_bias_correction():
    init, grads = _problem(6, seed=1)
    opt = AdamWeightDecay(0.003, weight_decay_rate=0.05, bias_correction=True)
    got = _run_optimizer(opt, init, grads)
    want = np_adam_weight_decay(init, grads, [0.003] * 6, decay=0.05, bias_correction=True)
    for k in init:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_lamb_matches_reference():
    init, grads = _problem(6, seed=2)
    opt = create_optimizer("lamb", 0.01, num_train_steps=100, num_warmup_steps=0,
                           weight_decay=0.01)
    got = _run_optimizer(opt, init, grads)
    sched = WarmupLinearDecay(0.01, 100, 0)
    lrs = [float(sched(t)) for t in range(6)]
    want = np_lamb(init, grads, lrs)
    for k in init:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_warmup_linear_decay_values():
    s = WarmupLinearDecay(2e-5, num_train_steps=100, num_warmup_steps=10)
    steps = np.arange(0, 120)
    got = np.array([float(s(int(t))) for t in steps])
    want = np.where(steps < 10, 2e-5 * steps / 10,
                    2e-5 * np.clip(1 - (steps - 10) / 90, 0, 1))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-12)
    assert got.max() == pytest.approx(2e-5) and got[100:].max() == 0.0
    # Google's form: decay counted from step 0
    g = WarmupLinearDecay(1.0, 100, 10, decay_from_zero=True)
    for t in (0, 5, 10, 50, 99, 100, 150):
        assert float(g(t)) == pytest.approx(google_lr(t, 1.0, 100, 10), abs=1e-6)
    # no warmup, end value
    e = WarmupLinearDecay(1.0, 10, 0, end_learning_rate=0.1)
    assert float(e(0)) == pytest.approx(1.0) and float(e(10)) == pytest.approx(0.1)
    # config round trip
    s2 = WarmupLinearDecay.from_config(s.get_config())
    assert float(s2(37)) == pytest.approx(float(s(37)))


def test_default_exclusions_on_keras_layers():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Embedding(10, 4),
                              keras.layers.Dense(4), keras.layers.LayerNormalization(),
                              keras.layers.Dense(2, name="classifier")], name="net")
    opt = AdamWeightDecay()
    opt.build(model.trainable_variables)
    got = {v.path: opt.uses_weight_decay(v) for v in model.trainable_variables}
    want = {p: not any(p.endswith(s) for s in ("bias", "gamma", "beta")) for p in got}
    assert got == want and sum(got.values()) == 3
    # custom patterns replace the defaults
    opt2 = AdamWeightDecay(exclude_from_weight_decay=["classifier"])
    opt2.build(model.trainable_variables)
    assert [opt2.uses_weight_decay(v) for v in model.trainable_variables] == [
        not v.path.startswith("net/classifier") for v in model.trainable_variables]
    assert "LayerNorm" in DEFAULT_EXCLUDE and "bias" in DEFAULT_EXCLUDE


def test_factory_errors_and_config_round_trip():
    with pytest.raises(ValueError, match="adamw, lamb"):
        create_optimizer("sgd", 1e-3, 10)
    with pytest.raises(ValueError, match="num_warmup_steps"):
        create_optimizer("adamw", 1e-3, 10, num_warmup_steps=11)
    opt = create_optimizer("adamw", 1e-3, 10, 2, weight_decay=0.02)
    cfg = opt.get_config()
    assert cfg["weight_decay_rate"] == 0.02 and cfg["epsilon"] == 1e-6
    assert cfg["bias_correction"] is False
    again = AdamWeightDecay.from_config(cfg)
    assert again.weight_decay_rate == 0.02 and again.exclude_patterns == opt.exclude_patterns
    lamb = Lamb.from_config(create_optimizer("lamb", 1e-3, 10).get_config())
    assert isinstance(lamb, Lamb)
