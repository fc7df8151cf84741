r"""Distil a fine-tuned BERT task model into a smaller student of the same task.

    # teacher: a fine-tuning run (trainers/finetune.py writes <model_dir>/model.keras)
    python trainers/distill.py --task=tsv --data_dir=/data/tweets --teacher=/runs/teacher \
      --model_dir=/runs/student --student_num_layers=3 --temperature=2 --alpha=0.5 \
      --do_train --do_eval --export_dir=/exports/student --learning_rate=1e-4 --num_train_epochs=3

The student is the teacher with `--student_num_layers` layers spread evenly (or `--student_layer_map=0,2,5`),
initialised from the teacher's weights (DistilBERT); or a smaller pretrained BERT with the teacher's vocabulary
(`--init_checkpoint`), or a random one (`--bert_config_file`). Every step runs the teacher on the same batch; the loss
is `alpha * T^2 * KL(teacher || student at temperature T) + (1 - alpha) * task loss` (+ `--hidden_state_weight` *
hidden-state MSE, TinyBERT style). `--unlabelled_text_file` adds in-domain text the teacher labels.

Tasks: classification and regression (GLUE, tsv/csv, `--multi_label`), tagging, squad, multiple_choice. Every other
flag is `trainers/finetune.py`'s, with the same meaning: the student is trained, evaluated, checkpointed (resume,
SIGTERM), saved as `<model_dir>/model.keras` and exported (`--export_dir`, `--litert_export_dir`) like any fine-tuned
model. This program only turns flags into settings and calls `bert_tf.training.finetuning.run` with a
`bert_tf.distillation.task.DistillationTask`.
"""

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from bert_tf import tasks  # noqa: E402
from bert_tf.distillation.task import DistillConfig, DistillationTask, load_teacher  # noqa: E402
from bert_tf.training import finetuning, settings  # noqa: E402

flags.DEFINE_string("task", None, "The task of the teacher and the data: a GLUE task, tsv/csv, tagging, squad, "
                    "multiple_choice.")
settings.define_flags(DistillConfig, finetuning.FinetuneConfig,
                      *{cls.config_class for cls in tasks.TASKS.values()})
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.task or not FLAGS.teacher:
        raise app.UsageError("--task and --teacher are required")
    try:
        task_class = tasks.task_class(FLAGS.task)
        task = task_class.from_config(FLAGS.task, settings.from_flags(task_class.config_class))
        distill = DistillationTask(task, load_teacher(FLAGS.teacher), settings.from_flags(DistillConfig))
        config = settings.from_flags(finetuning.FinetuneConfig)
        finetuning.check(distill, config)
    except settings.ConfigError as e:
        raise app.UsageError(str(e)) from None
    finetuning.run(distill, config)


if __name__ == "__main__":
    app.run(main)
