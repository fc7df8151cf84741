r"""Fine-tune BERT on a GLUE task or on your own TSV/CSV data.

    python trainers/finetune.py --task=mrpc --data_dir=/data/glue_data \
      --init_checkpoint=/models/uncased_L-12_H-768_A-12 --model_dir=/tmp/mrpc \
      --do_train --do_eval --do_predict --max_seq_length=128 --train_batch_size=32 \
      --learning_rate=2e-5 --num_train_epochs=3

    # your own data: <data_dir>/train.tsv, dev.tsv, test.tsv with a header row
    python trainers/finetune.py --task=tsv --data_dir=/data/reviews \
      --text_column=review --label_column=stars --init_checkpoint=... --model_dir=...

`--init_checkpoint` is anything `bert_tf.from_pretrained` reads (Google TF1,
Hugging Face or bert_tf directories, or a `bert_model.ckpt` prefix); the vocab
and casing come from it unless `--vocab_file` / `--do_lower_case` are given.

Text is tokenized inside the `tf.data` pipeline by `bert_tf.BertPreprocessor`.
Training batches are random draws, each padded only to its longest sequence
(rounded up to a multiple of 8). With `--bucket_window=N` (N > 1) a window of N
batches is sorted by packed length before it is cut, and the batches are then
shuffled: less padding, but batches of alike examples (off by default: it cost
quality on small data). Evaluation batches are sorted by text length the same way and
the predictions put back in file order.

The model is evaluated after every epoch; the best checkpoint by the task's
main metric (`accuracy`, `f1` for MRPC/QQP, `mcc` for CoLA, `pearson` for
STS-B / regression) is kept in `<model_dir>/best/`. Rerunning resumes from the
newest checkpoint in `--model_dir`. At the end the best weights are loaded
and `<model_dir>/eval_results.json` gets the dev metrics (MNLI:
`accuracy` = `matched_accuracy` and `mismatched_accuracy`; a labelled
`test.tsv` of a custom task adds `test_*` keys). `--do_predict` writes GLUE
submission files (`index`, `prediction` columns, label strings) to
`--predict_dir` (default `<model_dir>/submission`): `CoLA.tsv`, `SST-2.tsv`,
`MRPC.tsv`, `STS-B.tsv`, `QQP.tsv`, `MNLI-m.tsv`, `MNLI-mm.tsv` (+ `AX.tsv`),
`QNLI.tsv`, `RTE.tsv`, `WNLI.tsv`; `predictions.tsv` for tsv/csv tasks.
The task model (`bert_tf.BertClassifier`: encoder, preprocessor with its
vocabulary, head, labels) is the one object trained, checkpointed, written to
`<model_dir>/model.keras` and, with `--export_dir`, exported by
`bert_tf.tasks.classification.export.export_classifier` (a versioned serving SavedModel
`<export_dir>/<version>/` taking raw text). This program only turns flags into
a `bert_tf.training.finetuning.FinetuneConfig` and a `bert_tf.tasks` task and calls
`bert_tf.training.finetuning.run`.
"""

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from bert_tf import tasks  # noqa: E402
from bert_tf.training import finetuning, settings  # noqa: E402

flags.DEFINE_string("task", None, "GLUE task (cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli, ax), tsv/csv, "
                    "tagging (CoNLL files in --data_dir), or squad (--train_file/--predict_file).")
# Every other flag is a field of FinetuneConfig or of a task's settings dataclass: name, default and help live there.
settings.define_flags(finetuning.FinetuneConfig, *{cls.config_class for cls in tasks.TASKS.values()})
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.task:
        raise app.UsageError("--task is required")
    try:
        task_class = tasks.task_class(FLAGS.task)
        task = task_class.from_config(FLAGS.task, settings.from_flags(task_class.config_class))
        config = settings.from_flags(finetuning.FinetuneConfig)
        finetuning.check(task, config)
    except settings.ConfigError as e:
        raise app.UsageError(str(e)) from None
    finetuning.run(task, config)


if __name__ == "__main__":
    app.run(main)
