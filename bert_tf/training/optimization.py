"""Optimizers and learning-rate schedule for BERT pretraining and fine-tuning.

* :class:`WarmupLinearDecay` - linear warmup from 0 to the peak rate over
  ``num_warmup_steps``, then linear decay to 0 at ``num_train_steps``
  (Google's BERT schedule).
* :class:`AdamWeightDecay` - Adam with decoupled weight decay. With the defaults
  it is Google's ``AdamWeightDecayOptimizer``: **no bias correction**,
  ``epsilon=1e-6``, ``weight_decay_rate=0.01``, LayerNorm and bias variables
  excluded from decay. ``bias_correction=True`` gives textbook AdamW.
* :class:`Lamb` - LAMB (layer-wise adaptive moments), same exclusions (they also
  skip the layer-wise trust ratio).
* :func:`create_optimizer` - factory used by the trainers.

Gradient clipping (Google: global norm 1.0) is done by
:class:`bert_tf.training.Trainer` (``clip_norm=1.0``) *after* gradients are summed
across replicas; Keras' own ``global_clipnorm`` would clip each replica's partial
gradient before the all-reduce, so the optimizers here are created without it.

Why not ``keras.optimizers.AdamW`` / ``keras.optimizers.Lamb``: Keras' AdamW always
bias-corrects (Google's BERT optimizer does not), Keras' Lamb applies weight decay
outside the trust ratio (LAMB puts it inside), and Keras'
``exclude_from_weight_decay(var_names=...)`` matches only the short variable
name (``gamma``, ``bias``), not the layer path (``.../LayerNorm/gamma``).

Variables are excluded from weight decay when one of ``exclude_from_weight_decay``
(regular expressions) matches the variable's full path (``variable.path``, e.g.
``encoder/layer_0/attention/output/LayerNorm/gamma``). The default patterns
:data:`DEFAULT_EXCLUDE` exclude Google's ``LayerNorm``/``layer_norm``/``bias``,
the ``gamma``/``beta`` parameters of Keras normalization layers and those of our
encoder's per-layer norms (``layer_N/attention_norm_gamma``, ``.../output_norm_beta``).

Example::

    >>> import keras
    >>> opt = create_optimizer("adamw", learning_rate=1e-4, num_train_steps=1000,
    ...                        num_warmup_steps=100)
    >>> float(opt.learning_rate)  # step 0 of the warmup
    0.0
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> opt.build(model.trainable_variables)
    >>> [opt.uses_weight_decay(v) for v in model.trainable_variables]
    [True, False]
"""

from __future__ import annotations

import os
import re

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import ops  # noqa: E402

from bert_tf.training.time_budget import WallClockLinearDecay  # noqa: E402

DEFAULT_EXCLUDE = ("LayerNorm", "layer_norm", "bias", r"(^|/)gamma$", r"(^|/)beta$", r"norm_(gamma|beta)$")


@keras.saving.register_keras_serializable(package="bert_tf")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup then linear decay to ``end_learning_rate``.

    ``lr(step) = peak * step / num_warmup_steps`` for ``step < num_warmup_steps``,
    then ``peak * (1 - (step - w) / (num_train_steps - w))`` (Google's BERT rule is
    ``polynomial_decay(power=1)`` over all ``num_train_steps`` steps with the
    warmup overriding the first ``w`` steps; set ``decay_from_zero=True`` for that
    exact form), floored at ``end_learning_rate``; constant after the end.

    Example::

        >>> s = WarmupLinearDecay(1.0, num_train_steps=10, num_warmup_steps=2)
        >>> [round(float(s(i)), 3) for i in (0, 1, 2, 6, 10, 12)]
        [0.0, 0.5, 1.0, 0.5, 0.0, 0.0]
    """

    def __init__(self, learning_rate, num_train_steps, num_warmup_steps=0,
                 end_learning_rate=0.0, decay_from_zero=False, name=None):
        if num_train_steps <= 0:
            raise ValueError(f"num_train_steps must be > 0, got {num_train_steps}")
        if not 0 <= num_warmup_steps <= num_train_steps:
            raise ValueError(
                f"num_warmup_steps={num_warmup_steps} must be in [0, num_train_steps="
                f"{num_train_steps}]")
        self.learning_rate = float(learning_rate)
        self.num_train_steps = int(num_train_steps)
        self.num_warmup_steps = int(num_warmup_steps)
        self.end_learning_rate = float(end_learning_rate)
        self.decay_from_zero = bool(decay_from_zero)
        self.name = name

    def __call__(self, step):
        step = ops.cast(step, "float32")
        peak = self.learning_rate
        end = self.end_learning_rate
        total = float(self.num_train_steps)
        warm = float(self.num_warmup_steps)
        if self.decay_from_zero:
            frac = ops.minimum(step, total) / total
        else:
            span = max(total - warm, 1.0)
            frac = ops.clip((step - warm) / span, 0.0, 1.0)
        decayed = (peak - end) * (1.0 - frac) + end
        if warm > 0:
            warmup = peak * step / warm
            return ops.where(step < warm, warmup, decayed)
        return decayed

    def get_config(self):
        return {
            "learning_rate": self.learning_rate,
            "num_train_steps": self.num_train_steps,
            "num_warmup_steps": self.num_warmup_steps,
            "end_learning_rate": self.end_learning_rate,
            "decay_from_zero": self.decay_from_zero,
            "name": self.name,
        }


class _DecayMaskMixin:
    """Weight-decay exclusion by regular expressions on the variable path."""

    def _init_exclude(self, exclude_from_weight_decay, exclude_from_layer_adaptation=None):
        pats = DEFAULT_EXCLUDE if exclude_from_weight_decay is None else exclude_from_weight_decay
        self.exclude_patterns = tuple(pats)
        self._exclude_re = [re.compile(p) for p in self.exclude_patterns]
        if exclude_from_layer_adaptation is None:
            exclude_from_layer_adaptation = self.exclude_patterns
        self.exclude_layer_adaptation_patterns = tuple(exclude_from_layer_adaptation)
        self._exclude_adapt_re = [re.compile(p) for p in self.exclude_layer_adaptation_patterns]
        # Set when the gradients are already summed across replicas by the caller
        # (bert_tf.training.Trainer); then the Keras all-reduce is skipped.
        self.skip_gradient_all_reduce = False

    @staticmethod
    def _var_path(variable):
        return getattr(variable, "path", None) or variable.name

    def uses_weight_decay(self, variable) -> bool:
        """Whether ``variable`` (a model variable) gets weight decay."""
        if not self.weight_decay_rate:
            return False
        path = self._var_path(variable)
        return not any(r.search(path) for r in self._exclude_re)

    def uses_layer_adaptation(self, variable) -> bool:
        path = self._var_path(variable)
        return not any(r.search(path) for r in self._exclude_adapt_re)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._momentums, self._velocities = self.add_optimizer_variables(
            var_list, ["m", "v"])
        self._decay_mask = [self.uses_weight_decay(v) for v in var_list]
        self._adapt_mask = [self.uses_layer_adaptation(v) for v in var_list]

    def _all_reduce_sum_gradients(self, grads_and_vars):
        if self.skip_gradient_all_reduce:
            return list(grads_and_vars)
        return super()._all_reduce_sum_gradients(grads_and_vars)

    def _moments(self, gradient, variable):
        i = self._get_variable_index(variable)
        m, v = self._momentums[i], self._velocities[i]
        self.assign(m, ops.add(ops.multiply(m, self.beta_1),
                               ops.multiply(gradient, 1.0 - self.beta_1)))
        self.assign(v, ops.add(ops.multiply(v, self.beta_2),
                               ops.multiply(ops.square(gradient), 1.0 - self.beta_2)))
        return i, m, v


@keras.saving.register_keras_serializable(package="bert_tf")
class AdamWeightDecay(_DecayMaskMixin, keras.optimizers.Optimizer):
    """Adam with decoupled weight decay; by default Google BERT's rule.

    Per variable ``w`` with gradient ``g`` at step ``t`` (1-based)::

        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        if bias_correction: m_, v_ = m / (1 - b1**t), v / (1 - b2**t)
        else:               m_, v_ = m, v               # Google's BERT
        update = m_ / (sqrt(v_) + epsilon)
        if decayed(w): update += weight_decay_rate * w
        w -= lr * update

    Args:
      learning_rate: float or schedule (e.g. :class:`WarmupLinearDecay`).
      weight_decay_rate: decoupled decay coefficient (Google: 0.01).
      beta_1, beta_2, epsilon: Adam constants (Google: 0.9, 0.999, 1e-6).
      bias_correction: ``False`` = Google's BERT optimizer.
      exclude_from_weight_decay: regexes matched against the variable path;
        default :data:`DEFAULT_EXCLUDE`.

    Example::

        >>> import numpy as np, keras
        >>> w = keras.Variable(np.ones(2, "float32"), name="kernel")
        >>> opt = AdamWeightDecay(learning_rate=0.1, weight_decay_rate=0.0)
        >>> opt.apply([np.array([1.0, -1.0], "float32")], [w])
        >>> [round(float(x), 4) for x in keras.ops.convert_to_numpy(w)]  # m=.1 v=.001: step ~ 3.16*lr
        [0.6838, 1.3162]
    """

    def __init__(self, learning_rate=0.001, weight_decay_rate=0.01, beta_1=0.9,
                 beta_2=0.999, epsilon=1e-6, bias_correction=False,
                 exclude_from_weight_decay=None, name="adam_weight_decay", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.weight_decay_rate = float(weight_decay_rate or 0.0)
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.bias_correction = bool(bias_correction)
        self._init_exclude(exclude_from_weight_decay)

    def update_step(self, gradient, variable, learning_rate):
        # TensorFlow's fused Adam kernel: one pass over weights and moments instead of ~14 elementwise ops (the
        # 7.8M-parameter embedding table made those ~2% of a small model's pretraining step on CPU). Its update,
        # lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps_t), is m_hat / (sqrt(v_hat) + eps) at
        # eps_t = eps * sqrt(1 - b2^t), and Google's uncorrected m / (sqrt(v) + eps) at beta powers 0.
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        i = self._get_variable_index(variable)
        if self._decay_mask[i]:  # decoupled: from the weights before this step
            self.assign_sub(variable, ops.multiply(variable, lr * self.weight_decay_rate))
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        if self.bias_correction:
            t = tf.cast(self.iterations + 1, dtype)
            beta_1_power, beta_2_power = tf.pow(beta_1, t), tf.pow(beta_2, t)
        else:
            beta_1_power = beta_2_power = tf.zeros([], dtype)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=self._momentums[i].handle, v=self._velocities[i].handle,
            beta1_power=beta_1_power, beta2_power=beta_2_power, lr=lr, beta1=beta_1, beta2=beta_2,
            epsilon=self.epsilon * tf.sqrt(1.0 - beta_2_power),
            grad=tf.cast(tf.convert_to_tensor(gradient), dtype))  # IndexedSlices (look-ups) made dense

    def get_config(self):
        config = super().get_config()
        config.update({
            "weight_decay_rate": self.weight_decay_rate,
            "beta_1": self.beta_1,
            "beta_2": self.beta_2,
            "epsilon": self.epsilon,
            "bias_correction": self.bias_correction,
            "exclude_from_weight_decay": list(self.exclude_patterns),
        })
        return config


@keras.saving.register_keras_serializable(package="bert_tf")
class Lamb(_DecayMaskMixin, keras.optimizers.Optimizer):
    """LAMB: Adam direction + weight decay, scaled per variable by a trust ratio.

    Per variable ``w`` at step ``t`` (1-based)::

        m = b1 * m + (1 - b1) * g ;  v = b2 * v + (1 - b2) * g**2
        update = (m / (1 - b1**t)) / (sqrt(v / (1 - b2**t)) + epsilon)
        if decayed(w): update += weight_decay_rate * w
        r = ||w|| / ||update|| if adapted(w) and both norms > 0 else 1
        w -= lr * r * update

    LayerNorm and bias variables are excluded from both the decay and the
    layer adaptation (``exclude_from_layer_adaptation`` defaults to
    ``exclude_from_weight_decay``), as in the LAMB paper's BERT setup.

    Example::

        >>> import numpy as np, keras
        >>> w = keras.Variable(np.full(4, 2.0, "float32"), name="kernel")
        >>> opt = Lamb(learning_rate=0.1, weight_decay_rate=0.0)
        >>> opt.apply([np.ones(4, "float32")], [w])
        >>> [round(float(x), 3) for x in keras.ops.convert_to_numpy(w)]  # r = 4/2: step 0.2
        [1.8, 1.8, 1.8, 1.8]
    """

    def __init__(self, learning_rate=0.001, weight_decay_rate=0.01, beta_1=0.9,
                 beta_2=0.999, epsilon=1e-6, exclude_from_weight_decay=None,
                 exclude_from_layer_adaptation=None, name="lamb", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.weight_decay_rate = float(weight_decay_rate or 0.0)
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self._init_exclude(exclude_from_weight_decay, exclude_from_layer_adaptation)

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        gradient = ops.cast(gradient, dtype)
        i, m, v = self._moments(gradient, variable)
        t = ops.cast(self.iterations + 1, dtype)
        m_hat = ops.divide(m, 1.0 - ops.power(ops.cast(self.beta_1, dtype), t))
        v_hat = ops.divide(v, 1.0 - ops.power(ops.cast(self.beta_2, dtype), t))
        update = ops.divide(m_hat, ops.add(ops.sqrt(v_hat), self.epsilon))
        if self._decay_mask[i]:
            update = ops.add(update, ops.multiply(ops.cast(self.weight_decay_rate, dtype),
                                                  variable))
        if self._adapt_mask[i]:
            w_norm = ops.sqrt(ops.sum(ops.square(variable)))
            u_norm = ops.sqrt(ops.sum(ops.square(update)))
            safe = ops.where(u_norm > 0, u_norm, ops.ones_like(u_norm))
            ratio = ops.where(ops.logical_and(w_norm > 0, u_norm > 0), w_norm / safe,
                              ops.ones_like(w_norm))
            update = ops.multiply(ratio, update)
        self.assign_sub(variable, ops.multiply(lr, update))

    def get_config(self):
        config = super().get_config()
        config.update({
            "weight_decay_rate": self.weight_decay_rate,
            "beta_1": self.beta_1,
            "beta_2": self.beta_2,
            "epsilon": self.epsilon,
            "exclude_from_weight_decay": list(self.exclude_patterns),
            "exclude_from_layer_adaptation": list(self.exclude_layer_adaptation_patterns),
        })
        return config


OPTIMIZERS = ("adamw", "lamb")


def create_optimizer(name: str, learning_rate: float, num_train_steps: int,
                     num_warmup_steps: int = 0, weight_decay: float = 0.01,
                     beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-6,
                     bias_correction: bool = False, end_learning_rate: float = 0.0,
                     exclude_from_weight_decay=None, decay_from_zero: bool = False,
                     time_budget=None):
    """Optimizer with the BERT schedule (linear warmup, linear decay to 0).

    Args:
      name: ``adamw`` (Google's AdamWeightDecay by default; ``bias_correction=True``
        for textbook AdamW) or ``lamb``.
      learning_rate: peak learning rate.
      num_train_steps: optimizer steps until the rate reaches ``end_learning_rate``.
      num_warmup_steps: linear warmup steps.
      weight_decay: decoupled weight decay rate (LayerNorm/bias excluded).
      exclude_from_weight_decay: regexes on variable paths (default
        :data:`DEFAULT_EXCLUDE`).
      decay_from_zero: Google's exact schedule (the linear decay counts from step 0,
        the warmup overrides the first steps); default: decay starts after warmup.
      time_budget: a :class:`bert_tf.training.time_budget.TimeBudget`: decay to 0
        at its deadline instead of at ``num_train_steps``
        (:class:`~bert_tf.training.time_budget.WallClockLinearDecay`).

    Clip gradients with ``Trainer(clip_norm=1.0)`` (the default), not on the optimizer.

    Example::

        >>> opt = create_optimizer("lamb", 2e-3, num_train_steps=100, num_warmup_steps=10)
        >>> type(opt).__name__, round(float(opt.learning_rate.numpy()), 6)
        ('Lamb', 0.0)
    """
    key = (name or "").lower()
    if key in ("adam", "adamw", "adam_weight_decay", "adamweightdecay"):
        key = "adamw"
    if key not in OPTIMIZERS:
        raise ValueError(f"--optimizer={name!r} is not one of {', '.join(OPTIMIZERS)}")
    if time_budget is not None:
        schedule = WallClockLinearDecay(learning_rate, num_warmup_steps, time_budget)
    else:
        schedule = WarmupLinearDecay(learning_rate, num_train_steps, num_warmup_steps,
                                     end_learning_rate=end_learning_rate,
                                     decay_from_zero=decay_from_zero)
    if key == "adamw":
        return AdamWeightDecay(schedule, weight_decay_rate=weight_decay, beta_1=beta_1,
                               beta_2=beta_2, epsilon=epsilon,
                               bias_correction=bias_correction,
                               exclude_from_weight_decay=exclude_from_weight_decay)
    return Lamb(schedule, weight_decay_rate=weight_decay, beta_1=beta_1, beta_2=beta_2,
                epsilon=epsilon, exclude_from_weight_decay=exclude_from_weight_decay)
