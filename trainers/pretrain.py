r"""BERT pretraining (masked LM + next sentence) with the shared Trainer.

    python trainers/pretrain.py \
      --bert_config_file=bert_config.json --vocab_file=vocab.txt \
      --input_files='/data/pretrain-*.tfrecord' --model_dir=/tmp/pretrain \
      --train_batch_size=256 --max_seq_length=128 --max_predictions_per_seq=20 \
      --num_train_steps=100000 --num_warmup_steps=10000 --learning_rate=1e-4 \
      --optimizer=adamw --strategy=mirrored --mixed_precision=mixed_bfloat16

Continue from a published checkpoint with `--init_checkpoint=<dir or
bert_model.ckpt prefix>` (Google, Hugging Face or bert_tf format; the MLM/NSP
heads are loaded when the checkpoint has them; without them, as in
sentence-transformers models, `--head_warmup_steps=N` first trains the random
heads alone, the encoder frozen). Rerunning the same command
resumes from the newest `ckpt-<step>` in `--model_dir` (step, optimizer state,
input position). SIGTERM writes a checkpoint and exits 0; a NaN/Inf loss stops
with an error and keeps the last good checkpoint. At the end the encoder and
heads are written to `<model_dir>/export` (`save_pretrained`) and
`<model_dir>/export_tf1/bert_model.ckpt` (Google TF1 names, with
`bert_config.json` and `vocab.txt`).

Like Google's run_pretraining.py, training on Google-format records needs no
vocabulary: the records hold ids and masks. `--vocab_file` (or the init
checkpoint's) is needed only where it is used: `--input_format=text`
(tokenizing), `--do_whole_word_mask` (## pieces), and `--dynamic_masking`
unless `--mask_token_id`, `--cls_token_id` and `--sep_token_id` are given (the
vocabulary size then comes from the model config). Without a vocabulary the
final export writes the weights and config (`export_tf1`) and says that
`vocab.txt` must be added to serve text.

`--dynamic_masking` draws fresh masks every batch: from Google-format records
(their masks are undone first) or, with `--input_format=text`, straight from raw
text (one sentence per line, blank line between documents).

Recipes beyond Google's (each a flag; Google's stays the default):
`--nonsp` trains the masked LM alone (no next-sentence head or loss); with
`--input_format=text` the text is then packed into full-length one-segment
chunks across sentence and document boundaries (no padding). `--masked_lm_prob`
sets the dynamic masking rate (e.g. 0.4). `--train_time_budget=SECONDS` ends
the run at a wall-clock deadline, the learning rate decaying linearly to zero
there (`--num_train_steps` is then only a cap). `--word_segmenter=jieba` with
`--do_whole_word_mask --input_format=text` masks Chinese words whole.

    python trainers/pretrain.py --bert_config_file=bert_config.json --vocab_file=vocab.txt \
      --input_files='corpus/*.txt' --input_format=text --dynamic_masking --nonsp \
      --masked_lm_prob=0.4 --train_time_budget=3600 --num_train_steps=1000000 \
      --num_warmup_steps=1000 --learning_rate=1e-3 --adam_bias_correction --model_dir=/tmp/crammed
"""

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402

FLAGS = flags.FLAGS

flags.DEFINE_string("bert_config_file", None, "bert_config.json of the model (optional with --init_checkpoint).")
flags.DEFINE_string("init_checkpoint", None,
                    "Pretrained checkpoint to start from: a directory (Google, Hugging Face or bert_tf "
                    "format) or a Google bert_model.ckpt prefix.")
flags.DEFINE_string("input_files", None, "Training input: comma-separated files/globs (TFRecords, or text "
                    "with --input_format=text).")
flags.DEFINE_string("model_dir", None, "Checkpoints, TensorBoard summaries and the final export.")
flags.DEFINE_integer("train_batch_size", 32, "Global batch size (all replicas, one dataset batch).")
flags.DEFINE_integer("max_seq_length", 128, "Sequence length of the records.")
flags.DEFINE_integer("max_predictions_per_seq", 20, "Masked LM predictions per sequence.")
flags.DEFINE_integer("num_train_steps", 100000, "Optimizer steps.")
flags.DEFINE_integer("num_warmup_steps", 10000, "Linear warmup steps.")
flags.DEFINE_float("learning_rate", 5e-5, "Peak learning rate.")
flags.DEFINE_enum("optimizer", "adamw", ["adamw", "lamb"], "AdamW (Google's AdamWeightDecay) or LAMB.")
flags.DEFINE_integer("gradient_accumulation_steps", 1, "Batches per optimizer step.")
flags.DEFINE_enum("strategy", "one_device", ["one_device", "mirrored", "multi_worker", "tpu"],
                  "tf.distribute strategy.")
flags.DEFINE_string("tpu", None, "TPU name or grpc:// address for --strategy=tpu.")
flags.DEFINE_integer("num_gpus", None, "GPUs for mirrored (default all).")
flags.DEFINE_enum("mixed_precision", "float32", ["float32", "mixed_float16", "mixed_bfloat16"],
                  "Keras dtype policy (loss scaling is used with mixed_float16).")
flags.DEFINE_bool("jit_compile", False, "XLA-compile the training step.")
flags.DEFINE_integer("steps_per_loop", 100, "Steps per tf.function call / progress line.")
flags.DEFINE_integer("save_checkpoints_steps", 1000, "Checkpoint cadence in steps.")
flags.DEFINE_integer("keep_checkpoint_max", 5, "Checkpoints kept.")
flags.DEFINE_bool("dynamic_masking", False, "Mask on the fly (new masks every epoch).")
# Beyond the list: needed for dynamic masking, raw text and the export.
flags.DEFINE_string("vocab_file", None,
                    "vocab.txt (default: the init checkpoint's). Not needed for Google-format records; "
                    "needed for --input_format=text, --do_whole_word_mask, and --dynamic_masking unless the "
                    "--*_token_id flags are given.")
flags.DEFINE_integer("mask_token_id", None,
                     "[MASK] id for --dynamic_masking without a vocabulary (Google's English BERT vocabularies: 103).")
flags.DEFINE_integer("cls_token_id", None,
                     "[CLS] id for --dynamic_masking without a vocabulary (Google's English BERT vocabularies: 101).")
flags.DEFINE_integer("sep_token_id", None,
                     "[SEP] id for --dynamic_masking without a vocabulary (Google's English BERT vocabularies: 102).")
flags.DEFINE_bool("do_lower_case", True, "Uncased vocabulary (raw text input; export metadata).")
flags.DEFINE_enum("input_format", "tfrecord", ["tfrecord", "text"], "Input file format.")
flags.DEFINE_float("masked_lm_prob", 0.15, "Dynamic masking probability.")
flags.DEFINE_bool("do_whole_word_mask", False, "Dynamic whole-word masking.")
flags.DEFINE_string("word_segmenter", None,
                    "With --do_whole_word_mask and --input_format=text: mask the characters of one segmenter word "
                    "together (Chinese whole-word masking): 'jieba', or 'package.module:function'.")
flags.DEFINE_bool("nsp", True, "Next-sentence prediction head and loss (Google). --nonsp: masked LM only; "
                  "raw text (--input_format=text) is then packed into full-length one-segment chunks.")
flags.DEFINE_float("peak_tflops", None,
                   "Peak TFLOP/s of one device for the MFU (model FLOPs utilisation) in the progress lines; default: "
                   "measured at start with a large matmul in the training precision (GPU/CPU); 0 = no MFU.")
flags.DEFINE_float("train_time_budget", None,
                   "Seconds of training: the learning rate decays linearly to 0 at this wall-clock deadline and "
                   "the run stops there (resumed runs continue the same budget); --num_train_steps is a cap.")
flags.DEFINE_integer("seed", 12345, "Seed of weight init, shuffling and dynamic masks.")
flags.DEFINE_float("weight_decay", 0.01, "Decoupled weight decay (LayerNorm and biases excluded).")
flags.DEFINE_bool("adam_bias_correction", False,
                  "AdamW with Adam's bias correction. Off = Google's AdamWeightDecay, made for 10k warmup "
                  "steps; turn it on for short runs, where the uncorrected second moment inflates early updates.")
flags.DEFINE_integer("head_warmup_steps", 0,
                     "Before pretraining, train only the MLM (and NSP) heads for this many steps, the encoder frozen "
                     "(in <model_dir>/head_warmup; not counted in --num_train_steps or --train_time_budget). For "
                     "--init_checkpoint without pretraining heads (sentence-transformers models, fine-tuned "
                     "checkpoints), whose random heads otherwise disturb the encoder: see the README.")
flags.DEFINE_float("head_warmup_learning_rate", 1e-3,
                   "Peak learning rate of --head_warmup_steps (AdamW with bias correction, 10% linear warmup, "
                   "linear decay).")


def build_model(strategy):
    """Encoder (fresh or from --init_checkpoint) + heads, optimizer; under the strategy scope."""
    import numpy as np

    import bert_tf
    from bert_tf.training.optimization import create_optimizer
    from bert_tf.training.time_budget import TimeBudget
    from bert_tf.pretraining.head_warmup import missing_heads
    from bert_tf.pretraining.pretrainer import BertPretrainer

    vocab_file, lower_case, extra = FLAGS.vocab_file, FLAGS.do_lower_case, {}
    with strategy.scope():
        if FLAGS.init_checkpoint:
            pre = bert_tf.from_pretrained(FLAGS.init_checkpoint)
            encoder, config = pre.encoder, pre.config
            vocab_file = vocab_file or pre.vocab_file
            lower_case = pre.lower_case
            extra = dict(pre.extra_weights or {})
            if FLAGS.bert_config_file:
                want = bert_tf.BertConfig.from_json_file(FLAGS.bert_config_file)
                for key in ("vocab_size", "hidden_size", "num_hidden_layers"):
                    if getattr(want, key) != getattr(config, key):
                        raise ValueError(
                            f"--bert_config_file {FLAGS.bert_config_file}: {key}={getattr(want, key)} but "
                            f"--init_checkpoint has {key}={getattr(config, key)}")
        else:
            if not FLAGS.bert_config_file:
                raise ValueError("give --bert_config_file (or --init_checkpoint)")
            config = bert_tf.BertConfig.from_json_file(FLAGS.bert_config_file)
            encoder = bert_tf.BertEncoder(config)
        model = BertPretrainer(encoder, next_sentence=FLAGS.nsp)
        L, P = FLAGS.max_seq_length, FLAGS.max_predictions_per_seq
        model({"input_word_ids": np.zeros((1, L), "int32"), "input_mask": np.ones((1, L), "int32"),
               "input_type_ids": np.zeros((1, L), "int32"),
               "masked_lm_positions": np.zeros((1, P), "int32")})
        if FLAGS.init_checkpoint:
            loaded = model.load_head_weights(extra, source=FLAGS.init_checkpoint)
            logging.info("loaded pretraining heads from %s: %s", FLAGS.init_checkpoint, loaded)
            missing = missing_heads(model, loaded)
            if missing and not FLAGS.head_warmup_steps:
                logging.warning("%s has no %s: these start random and their first updates disturb the pretrained "
                                "encoder; --head_warmup_steps (e.g. 100) trains them alone first",
                                FLAGS.init_checkpoint, ", ".join(missing))
        budget = TimeBudget(FLAGS.train_time_budget) if FLAGS.train_time_budget else None
        optimizer = create_optimizer(FLAGS.optimizer, FLAGS.learning_rate, FLAGS.num_train_steps,
                                     FLAGS.num_warmup_steps, weight_decay=FLAGS.weight_decay,
                                     bias_correction=FLAGS.adam_bias_correction, time_budget=budget)
    return model, optimizer, config, vocab_file, lower_case, budget


def build_masker(config, vocab_file):
    """The dynamic masker: from the vocabulary when there is one, else from the
    config's vocab_size and the --*_token_id flags (and says which)."""
    from bert_tf.pretraining.masking import DynamicMasker

    common = dict(masked_lm_prob=FLAGS.masked_lm_prob, max_predictions_per_seq=FLAGS.max_predictions_per_seq,
                  do_whole_word_mask=FLAGS.do_whole_word_mask, seed=FLAGS.seed)
    if vocab_file:
        logging.info("dynamic masking: [MASK]/[CLS]/[SEP] ids and vocabulary size from %s", vocab_file)
        return DynamicMasker.from_vocab_file(vocab_file, **common)
    if FLAGS.do_whole_word_mask:
        raise app.UsageError("--dynamic_masking --do_whole_word_mask needs --vocab_file (## pieces)")
    missing = [f"--{n}" for n in ("mask_token_id", "cls_token_id", "sep_token_id") if getattr(FLAGS, n) is None]
    if missing:
        raise app.UsageError(
            "--dynamic_masking needs the [MASK] id and the vocabulary size: give --vocab_file, or "
            f"{', '.join(missing)} (Google's English BERT vocabularies: --mask_token_id=103 --cls_token_id=101 "
            "--sep_token_id=102; the vocabulary size comes from the model config)")
    print(f"dynamic masking without a vocabulary: vocab_size={config.vocab_size} from the model config, "
          f"[MASK]={FLAGS.mask_token_id} [CLS]={FLAGS.cls_token_id} [SEP]={FLAGS.sep_token_id} from the flags",
          flush=True)
    return DynamicMasker(config.vocab_size, FLAGS.mask_token_id, FLAGS.cls_token_id, FLAGS.sep_token_id, **common)


def mfu_inputs(config, strategy):
    """(model FLOPs per example, peak FLOP/s of all replicas) for the progress line's MFU, or (None, None)."""
    from bert_tf.training import flops

    if FLAGS.peak_tflops == 0:
        return None, None
    per_example = flops.bert_training_flops_per_example(config, FLAGS.max_seq_length,
                                                        FLAGS.max_predictions_per_seq, FLAGS.nsp)
    if FLAGS.peak_tflops:
        peak = FLAGS.peak_tflops * 1e12
    elif FLAGS.strategy in ("one_device", "mirrored"):
        dtype = {"mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}.get(FLAGS.mixed_precision, "float32")
        peak = flops.measure_peak_flops(dtype)
        print(f"MFU: {per_example / 1e9:.2f} GFLOPs per example; measured {dtype} matmul peak "
              f"{peak / 1e12:.3f} TFLOP/s per device (--peak_tflops to set it)", flush=True)
    else:
        print("MFU: give --peak_tflops (per device) to see it with --strategy=" + FLAGS.strategy, flush=True)
        return None, None
    return per_example, peak * strategy.num_replicas_in_sync


def export(model, config, vocab_file, lower_case, model_dir):
    """save_pretrained + Google TF1 checkpoint of the encoder and heads. Without
    a vocabulary: the TF1 checkpoint and config only (weights), and a note."""
    import bert_tf

    heads = model.head_weights()
    if not vocab_file:
        tf1 = os.path.join(model_dir, "export_tf1")
        bert_tf.save_tf1_checkpoint(model.encoder, os.path.join(tf1, "bert_model.ckpt"), extra_weights=heads,
                                    write_config=True, vocab_file=None)
        print(f"no vocabulary (none given, none in the records): wrote the weights and bert_config.json to {tf1}; "
              f"add the vocab.txt the records were made with to that directory to serve text or to load it "
              f"with from_pretrained", flush=True)
        return None, tf1
    out = os.path.join(model_dir, "export")
    bert_tf.save_pretrained(model.encoder, out, vocab_file, lower_case=lower_case, extra_weights=heads)
    tf1 = os.path.join(model_dir, "export_tf1")
    bert_tf.save_tf1_checkpoint(model.encoder, os.path.join(tf1, "bert_model.ckpt"), extra_weights=heads,
                                write_config=True, vocab_file=vocab_file)
    return out, tf1


def warm_up(model, strategy, dataset_fn, raw_text):
    """--head_warmup_steps: the heads alone, the encoder frozen, before the main run (which, once it has a
    checkpoint, skips this). SIGTERM checkpoints and exits 0 here as in the main run."""
    from bert_tf.pretraining.head_warmup import warm_up_heads
    from bert_tf.pretraining.pretrainer import compute_loss
    from bert_tf.training.optimization import create_optimizer

    steps = FLAGS.head_warmup_steps
    with strategy.scope():
        optimizer = create_optimizer(FLAGS.optimizer, FLAGS.head_warmup_learning_rate, steps, steps // 10,
                                     weight_decay=FLAGS.weight_decay, bias_correction=True)
    print(f"head warm-up: {steps} steps of the pretraining heads alone (encoder frozen), lr "
          f"{FLAGS.head_warmup_learning_rate:g}", flush=True)
    result = warm_up_heads(model, optimizer, compute_loss, os.path.join(FLAGS.model_dir, "head_warmup"), steps,
                           train_dataset_fn=dataset_fn, strategy=strategy, steps_per_loop=FLAGS.steps_per_loop,
                           save_checkpoints_steps=FLAGS.save_checkpoints_steps, keep_checkpoint_max=1,
                           global_batch_size=FLAGS.train_batch_size, checkpoint_dataset_iterator=not raw_text)
    accuracy = result.metrics.get("mlm_accuracy", float("nan"))
    print(f"head warm-up done at step {result.global_step}: mlm_accuracy {accuracy:.4f}; now the whole model",
          flush=True)


def main(argv):
    del argv
    import keras
    import tensorflow as tf

    from bert_tf.training import distribute
    from bert_tf.pretraining.pretrainer import compute_loss, pretraining_dataset
    from bert_tf.training import Trainer

    for name in ("input_files", "model_dir"):
        if not getattr(FLAGS, name):
            raise app.UsageError(f"--{name} is required")
    if FLAGS.input_format == "text" and not FLAGS.dynamic_masking:
        raise app.UsageError("--input_format=text needs --dynamic_masking")
    if FLAGS.train_time_budget and FLAGS.strategy == "multi_worker":
        raise app.UsageError("--train_time_budget is not supported with --strategy=multi_worker yet: each worker "
                             "reads its own clock, and the workers must stop at the same step")
    if FLAGS.word_segmenter and not (FLAGS.do_whole_word_mask and FLAGS.input_format == "text"):
        raise app.UsageError("--word_segmenter needs --do_whole_word_mask and --input_format=text (records keep no "
                             "word boundaries; make static records with create_pretraining_data.py "
                             "--word_segmenter instead)")
    distribute.configure_mixed_precision(FLAGS.mixed_precision)
    strategy = distribute.get_strategy(FLAGS.strategy, num_gpus=FLAGS.num_gpus, tpu=FLAGS.tpu)
    keras.utils.set_random_seed(FLAGS.seed)
    model, optimizer, config, vocab_file, lower_case, budget = build_model(strategy)
    if FLAGS.input_format == "text" and not vocab_file:
        raise app.UsageError("--input_format=text needs --vocab_file (raw text is tokenized)")
    masker = build_masker(config, vocab_file) if FLAGS.dynamic_masking else None
    global_batch = FLAGS.train_batch_size
    raw_text = FLAGS.input_format == "text"

    def dataset_fn(ctx):
        return pretraining_dataset(
            FLAGS.input_files, ctx.get_per_replica_batch_size(global_batch),
            FLAGS.max_seq_length, FLAGS.max_predictions_per_seq, is_training=True, masker=masker,
            raw_text=raw_text, vocab_file=vocab_file, do_lower_case=lower_case, seed=FLAGS.seed,
            input_context=ctx, nsp=FLAGS.nsp, word_segmenter=FLAGS.word_segmenter)

    flops, peak = mfu_inputs(config, strategy)
    if FLAGS.head_warmup_steps and not tf.train.latest_checkpoint(FLAGS.model_dir):
        warm_up(model, strategy, dataset_fn, raw_text)
    trainer = Trainer(
        model, optimizer, compute_loss, strategy=strategy, model_dir=FLAGS.model_dir,
        num_train_steps=FLAGS.num_train_steps, steps_per_loop=FLAGS.steps_per_loop,
        save_checkpoints_steps=FLAGS.save_checkpoints_steps,
        keep_checkpoint_max=FLAGS.keep_checkpoint_max,
        gradient_accumulation_steps=FLAGS.gradient_accumulation_steps,
        jit_compile=FLAGS.jit_compile, global_batch_size=global_batch,
        # raw text comes through a Python generator, whose position cannot be saved
        checkpoint_dataset_iterator=not raw_text, time_budget=budget, flops_per_example=flops, peak_flops=peak)
    result = trainer.train(train_dataset_fn=dataset_fn)
    if distribute.is_chief(strategy):
        out, tf1 = export(model, config, vocab_file, lower_case, FLAGS.model_dir)
        exported = f"{out} and {tf1}" if out else tf1
        loss = "" if result.loss is None else f" loss {result.loss:.4f}"  # None: nothing was left to train
        print(f"final step {result.global_step}{loss} | exported {exported}", flush=True)


if __name__ == "__main__":
    app.run(main)
