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
Training batches are bucketed by length: a window of `--bucket_window`
batches is sorted by packed length, cut into batches, and every batch is padded
only to its longest sequence (rounded up to a multiple of 8), then the batches
are shuffled. Evaluation batches are sorted by text length the same way and
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
`bert_tf.export.export_classifier` (a versioned serving SavedModel
`<export_dir>/<version>/` taking raw text). This program only turns flags into
a `bert_tf.finetuning.FinetuneConfig` and a `bert_tf.tasks` task and calls
`bert_tf.finetuning.run`.
"""

import dataclasses
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from bert_tf import finetuning, glue  # noqa: E402
from bert_tf.tasks import QuestionAnsweringTask, SentencePredictionTask, TaggingTask  # noqa: E402

flags.DEFINE_string("task", None, "GLUE task (cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli, ax), tsv/csv, "
                    "tagging (CoNLL files in --data_dir), or squad (--train_file/--predict_file).")
flags.DEFINE_string("data_dir", None, "GLUE root (<data_dir>/<TASK>/train.tsv ...) or the task's own directory.")
flags.DEFINE_string("init_checkpoint", None, "Pretrained BERT: any directory/prefix bert_tf.from_pretrained reads.")
flags.DEFINE_string("bert_config_file", None, "Without --init_checkpoint: train from random init with this config.")
flags.DEFINE_string("vocab_file", None, "vocab.txt (default: the init checkpoint's).")
flags.DEFINE_bool("do_lower_case", None, "Lower-case input (default: the init checkpoint's casing).")
flags.DEFINE_string("model_dir", None, "Checkpoints, TensorBoard logs, eval_results.json, submissions, model.keras.")
flags.DEFINE_integer("max_seq_length", 128, "Longest packed sequence; longer inputs are truncated.")
flags.DEFINE_integer("train_batch_size", 32, "Global training batch size.")
flags.DEFINE_integer("eval_batch_size", 64, "Evaluation/prediction batch size.")
flags.DEFINE_float("learning_rate", 2e-5, "Peak learning rate.")
flags.DEFINE_float("num_train_epochs", 3.0, "Epochs (may be fractional).")
flags.DEFINE_float("warmup_proportion", 0.1, "Fraction of steps of linear warmup.")
flags.DEFINE_float("weight_decay", 0.01, "Decoupled weight decay (LayerNorm and biases excluded).")
flags.DEFINE_enum("optimizer", "adamw", ["adamw", "lamb"], "Optimizer.")
flags.DEFINE_bool("adam_bias_correction", True,
                  "AdamW with Adam's bias correction, as PyTorch/Hugging Face, Keras and the Model Garden (the "
                  "default). --noadam_bias_correction = Google's TF1 AdamWeightDecay exactly, whose uncorrected "
                  "moments make the first few hundred updates 3-6x larger (it can collapse small models on "
                  "rare labels to predicting one class).")
flags.DEFINE_enum("strategy", "one_device", ["one_device", "mirrored", "multi_worker", "tpu"], "Distribution.")
flags.DEFINE_string("tpu", None, "TPU name or address for --strategy=tpu.")
flags.DEFINE_integer("num_gpus", None, "GPUs for --strategy=mirrored (default all).")
flags.DEFINE_enum("mixed_precision", "float32", ["float32", "mixed_float16", "mixed_bfloat16"], "Precision policy.")
flags.DEFINE_bool("jit_compile", False, "XLA-compile the training step.")
flags.DEFINE_bool("do_train", False, "Train.")
flags.DEFINE_bool("do_eval", False, "Evaluate on the dev set(s); write eval_results.json.")
flags.DEFINE_bool("do_predict", False, "Predict the test set(s); write submission files.")
flags.DEFINE_string("predict_dir", None, "Where submission files go (default <model_dir>/submission).")
flags.DEFINE_string("export_dir", None, "Export the trained model here (versioned serving SavedModel).")
flags.DEFINE_enum("serving_dtype", None, ["float32", "bfloat16", "float16"],
                  "Compute dtype of the serving export (default: the training precision). bfloat16/float16: the "
                  "encoder's matmuls in that dtype (weights, LayerNorm, softmax and outputs stay float32).")
flags.DEFINE_bool("strict", False, "A malformed data row is an error instead of being skipped.")
flags.DEFINE_string("text_column", "sentence", "tsv/csv: header name of the text column.")
flags.DEFINE_string("text_b_column", None, "tsv/csv: header name of the second text (pair tasks).")
flags.DEFINE_string("label_column", "label", "tsv/csv: header name of the label column.")
flags.DEFINE_list("labels", None, "tsv/csv: the label set in id order (default: detected from train).")
flags.DEFINE_bool("regression", False, "tsv/csv: numeric label, one output, MSE loss.")
flags.DEFINE_bool("dynamic_padding", True, "Pad each batch to its longest sequence (with length bucketing).")
flags.DEFINE_integer("bucket_window", 32, "Batches sorted together by length when bucketing.")
flags.DEFINE_integer("steps_per_loop", 50, "Steps per tf.function call / progress line.")
flags.DEFINE_integer("keep_checkpoint_max", 2, "Training checkpoints kept.")
flags.DEFINE_integer("max_train_examples", None, "Use only the first N training examples (quick runs).")
flags.DEFINE_integer("seed", 12345, "Seed of head init, dropout and shuffling.")
flags.DEFINE_float("dropout_rate", None, "Dropout before the head (default: the encoder's hidden dropout).")
# token tagging (--task=tagging): CoNLL train.txt, dev.txt (or valid.txt), test.txt in --data_dir
flags.DEFINE_enum("tag_scheme", None, ["IOB1", "IOB2", "BIOES"], "Tagging: the tag scheme (default: detected).")
# question answering (--task=squad): Google's run_squad.py flags
flags.DEFINE_string("train_file", None, "SQuAD: training JSON (v1.1, or v2.0 with --version_2_with_negative).")
flags.DEFINE_string("predict_file", None, "SQuAD: JSON to predict (and evaluate, when it has answers).")
flags.DEFINE_bool("version_2_with_negative", False, "SQuAD v2.0: questions may have no answer.")
flags.DEFINE_integer("doc_stride", 128, "SQuAD: tokens between the starts of a long context's windows.")
flags.DEFINE_integer("max_query_length", 64, "SQuAD: question wordpieces kept.")
flags.DEFINE_integer("n_best_size", 20, "SQuAD: n-best start/end logits considered and n-best answers written.")
flags.DEFINE_integer("max_answer_length", 30, "SQuAD: longest answer in wordpieces.")
flags.DEFINE_float("null_score_diff_threshold", 0.0, "SQuAD v2.0: answer \"\" if null - best > this.")
# LiteRT export (device / single-request CPU serving)
flags.DEFINE_string("litert_export_dir", None, "Also write <dir>/model.tflite (tokenizer inside) + model.json.")
flags.DEFINE_enum("litert_precision", "int8", ["float32", "float16", "dynamic_int8", "int8"], "LiteRT weights.")
flags.DEFINE_integer("representative_examples", 200, "Training texts that calibrate full int8 LiteRT.")
FLAGS = flags.FLAGS


def sentence_prediction_task():
    """GLUE or tsv/csv: `SentencePredictionTask` over its `bert_tf.glue` reader."""
    if not FLAGS.data_dir:
        raise app.UsageError("--data_dir is required")
    name = glue.canonical_task_name(FLAGS.task)
    options = {}
    if name in ("tsv", "csv"):
        options = dict(text_column=FLAGS.text_column, text_b_column=FLAGS.text_b_column,
                       label_column=FLAGS.label_column, labels=FLAGS.labels, regression=FLAGS.regression)
    if name == "ax" and FLAGS.do_train:
        raise app.UsageError("--task=ax is GLUE's unlabelled diagnostic set: train on --task=mnli (whose "
                             "--do_predict also writes AX.tsv) or use --task=ax with --do_predict only")
    return SentencePredictionTask(glue.get_task(name, FLAGS.data_dir, strict=FLAGS.strict, **options))


def tagging_task():
    """CoNLL token tagging: `TaggingTask` over --data_dir."""
    if not FLAGS.data_dir:
        raise app.UsageError("--data_dir is required")
    return TaggingTask(FLAGS.data_dir, tag_scheme=FLAGS.tag_scheme, strict=FLAGS.strict)


def squad_task():
    """SQuAD v1.1 / v2.0: `QuestionAnsweringTask` over --train_file / --predict_file (--max_seq_length 384
    unless given, as run_squad.py)."""
    if FLAGS.do_train and not FLAGS.train_file:
        raise app.UsageError("--do_train needs --train_file")
    if (FLAGS.do_predict or FLAGS.do_eval) and not FLAGS.predict_file:
        raise app.UsageError("--do_predict/--do_eval need --predict_file")
    if not FLAGS["max_seq_length"].present:
        FLAGS.max_seq_length = 384
    return QuestionAnsweringTask(FLAGS.train_file, FLAGS.predict_file,
                                 version_2_with_negative=FLAGS.version_2_with_negative, strict=FLAGS.strict,
                                 max_query_length=FLAGS.max_query_length, doc_stride=FLAGS.doc_stride,
                                 n_best_size=FLAGS.n_best_size, max_answer_length=FLAGS.max_answer_length,
                                 null_score_diff_threshold=FLAGS.null_score_diff_threshold)


def task_from_flags():
    """The `bert_tf.tasks` task that --task names."""
    factories = {"tagging": tagging_task, "squad": squad_task}
    return factories.get(FLAGS.task, sentence_prediction_task)()


def config_from_flags():
    """`bert_tf.finetuning.FinetuneConfig` from the flags of the same names."""
    names = [f.name for f in dataclasses.fields(finetuning.FinetuneConfig)]
    return finetuning.FinetuneConfig(**{name: FLAGS[name].value for name in names})


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    for name in ("task", "model_dir"):
        if not FLAGS[name].value:
            raise app.UsageError(f"--{name} is required")
    if not (FLAGS.do_train or FLAGS.do_eval or FLAGS.do_predict):
        raise app.UsageError("give at least one of --do_train, --do_eval, --do_predict")
    task = task_from_flags()
    if FLAGS.litert_export_dir and not task.has_litert_export:
        raise app.UsageError(f"--task={FLAGS.task} has no LiteRT export: drop --litert_export_dir "
                             "(--export_dir writes its serving SavedModel)")
    finetuning.run(task, config_from_flags())


if __name__ == "__main__":
    app.run(main)
