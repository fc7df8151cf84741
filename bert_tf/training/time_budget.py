"""Training to a wall-clock budget (`--train_time_budget`): the learning rate decays linearly to zero at the
deadline and the run stops there, as the "Cramming" recipe does, instead of after a fixed number of steps.

`TimeBudget` counts the seconds from the start of training (after the checkpoint is restored; the first loop's
tracing counts, as it does on any real run). The count is a checkpointed variable: a run that is killed and
restarted resumes with the time it had used up to its last checkpoint (time between runs, start-up and
restoring do not count). `WallClockLinearDecay` reads the budget inside the training step (`tf.timestamp()`), so the rate
falls smoothly within a loop of `steps_per_loop` steps, not in stairs.

>>> budget = TimeBudget(3600.0)
>>> budget.start()
>>> round(float(budget.fraction_used()), 3), budget.exhausted()
(0.0, False)
>>> schedule = WallClockLinearDecay(1e-3, num_warmup_steps=10, time_budget=budget)
>>> round(float(schedule(5)), 6)   # warm-up still counts steps
0.0005
"""

import keras
import tensorflow as tf


class TimeBudget:
    """`seconds` of training; `used` (a float64 variable) is what earlier runs and this one spent."""

    def __init__(self, seconds):
        if not seconds or seconds <= 0:
            raise ValueError(f"--train_time_budget must be > 0 seconds, got {seconds}")
        self.seconds = float(seconds)
        self.used = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="time_budget_used_seconds")
        self._mark = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="time_budget_mark")

    def start(self):
        """Starts (or resumes, after the checkpoint restored `used`) the clock."""
        self._mark.assign(tf.timestamp())

    def checkpoint(self):
        """Folds the time since the mark into `used` (call before saving `used`)."""
        now = tf.timestamp()
        self.used.assign_add(now - self._mark)
        self._mark.assign(now)

    def used_seconds(self):
        return self.used + (tf.timestamp() - self._mark)

    def fraction_used(self):
        return tf.minimum(self.used_seconds() / self.seconds, 1.0)

    def exhausted(self):
        return bool(self.used_seconds().numpy() >= self.seconds)

    def remaining_seconds(self):
        return max(0.0, self.seconds - float(self.used_seconds().numpy()))


class WallClockLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up over `num_warmup_steps` steps, then `peak * (1 - fraction of the budget used)`,
    zero at the deadline."""

    def __init__(self, learning_rate, num_warmup_steps, time_budget):
        self.learning_rate = float(learning_rate)
        self.num_warmup_steps = int(num_warmup_steps)
        self.time_budget = time_budget

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        decayed = self.learning_rate * (1.0 - tf.cast(self.time_budget.fraction_used(), tf.float32))
        if self.num_warmup_steps > 0:
            warmup = self.learning_rate * step / float(self.num_warmup_steps)
            return tf.where(step < self.num_warmup_steps, tf.minimum(warmup, decayed), decayed)
        return decayed

    def get_config(self):
        return {"learning_rate": self.learning_rate, "num_warmup_steps": self.num_warmup_steps,
                "time_budget_seconds": self.time_budget.seconds}
