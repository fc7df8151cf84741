"""The Hugging Face PyTorch side of the benches: fine-tuning loops as a user of transformers writes them.

Not a bench of its own (`make bench` skips it): bench/robustness.py, bench/tagging.py and bench/squad.py import it.
Every loop is the common recipe: `torch.optim.AdamW` (bias-corrected; weight decay 0.01 except biases and
LayerNorm, as Google and the HF examples exclude them), linear warmup over the first 10% of the steps then linear
decay to 0, gradient clipping at 1.0, batches shuffled by a seeded generator, each padded to its longest row.
"""

import time

import numpy as np
import torch
import transformers


def optimizer_and_schedule(model, learning_rate, steps, warmup_proportion=0.1, weight_decay=0.01, eps=1e-8):
    """torch AdamW + linear warmup/decay (HF's `get_linear_schedule_with_warmup`)."""
    no_decay = ("bias", "LayerNorm")
    groups = [{"params": [p for n, p in model.named_parameters() if not any(k in n for k in no_decay)],
               "weight_decay": weight_decay},
              {"params": [p for n, p in model.named_parameters() if any(k in n for k in no_decay)],
               "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=learning_rate, eps=eps)
    schedule = transformers.get_linear_schedule_with_warmup(optimizer, int(steps * warmup_proportion), steps)
    return optimizer, schedule


def train_loop(model, batches_fn, steps, learning_rate, eps=1e-8, dropout=True, total_steps=None):
    """Trains `model` on `batches_fn(epoch)` (yielding keyword dicts with labels) for `steps` steps (the schedule
    spans `total_steps`, default `steps`; `dropout=False` trains in eval mode). Returns (model in eval mode,
    {"examples_per_s", "examples_per_s_after_10" (steps 11 on), "seconds", "final_loss", "losses"})."""
    optimizer, schedule = optimizer_and_schedule(model, learning_rate, total_steps or steps, eps=eps)
    model.train(dropout)
    step, epoch, examples, losses = 0, 0, 0, []
    t0, t10, examples10 = time.time(), None, 0
    while step < steps:
        for batch in batches_fn(epoch):
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            losses.append(float(loss))
            examples += len(next(iter(batch.values())))
            step += 1
            if step == 10:
                t10, examples10 = time.time(), examples
            if step >= steps:
                break
        epoch += 1
    seconds = time.time() - t0
    after_10 = (examples - examples10) / (time.time() - t10) if t10 and step > 10 else 0.0
    return model.eval(), {"examples_per_s": examples / seconds, "examples_per_s_after_10": after_10,
                          "seconds": seconds, "final_loss": float(np.mean(losses[-20:])), "losses": losses}


def shuffled(n, seed, epoch, batch_size):
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


# ----------------------------------------------------------------------------- sentence classification
def classifier(model_dir, labels, texts, label_names, seq_length, batch_size, epochs, learning_rate, seed):
    """`BertForSequenceClassification` fine-tuned on (texts, label_names); returns (model, tokenizer, stats)."""
    torch.manual_seed(seed)
    tokenizer = transformers.BertTokenizerFast.from_pretrained(model_dir)
    model = transformers.BertForSequenceClassification.from_pretrained(model_dir, num_labels=len(labels))
    ids = {label: i for i, label in enumerate(labels)}
    y = np.array([ids[x] for x in label_names])

    def batches(epoch):
        for rows in shuffled(len(texts), seed, epoch, batch_size):
            enc = tokenizer([texts[i] for i in rows], truncation=True, max_length=seq_length, padding=True,
                            return_tensors="pt")
            yield dict(enc, labels=torch.tensor(y[rows]))

    steps = int(np.ceil(len(texts) / batch_size)) * epochs
    model, stats = train_loop(model, batches, steps, learning_rate)
    return model, tokenizer, stats


def classify(model, tokenizer, texts, seq_length, batch_size=64):
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            enc = tokenizer(texts[i:i + batch_size], truncation=True, max_length=seq_length, padding=True,
                            return_tensors="pt")
            out.append(model(**enc).logits.argmax(-1).numpy())
    return np.concatenate(out)


# ----------------------------------------------------------------------------- token tagging
def _tagging_batch(tokenizer, sentences, ids, seq_length, with_labels=True):
    enc = tokenizer([s.words for s in sentences], is_split_into_words=True, truncation=True,
                    max_length=seq_length, padding=True, return_tensors="pt")
    labels = []
    for b, s in enumerate(sentences):
        previous, row = None, []
        for w in enc.word_ids(b):  # the first piece of each word carries its tag; -100 elsewhere
            row.append(-100 if w is None or w == previous or not with_labels else ids[s.tags[w]])
            previous = w
        labels.append(row)
    return enc, torch.tensor(labels)


def tagger(model_dir, labels, sentences, seq_length, batch_size, epochs, learning_rate, seed):
    """`BertForTokenClassification` fine-tuned on CoNLL sentences (first-piece labels; sentences over the length
    truncated); returns (model, tokenizer, stats)."""
    torch.manual_seed(seed)
    tokenizer = transformers.BertTokenizerFast.from_pretrained(model_dir)
    model = transformers.BertForTokenClassification.from_pretrained(
        model_dir, num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={t: i for i, t in enumerate(labels)})
    ids = {t: i for i, t in enumerate(labels)}

    def batches(epoch):
        for rows in shuffled(len(sentences), seed, epoch, batch_size):
            enc, y = _tagging_batch(tokenizer, [sentences[i] for i in rows], ids, seq_length)
            yield dict(enc, labels=y)

    steps = int(np.ceil(len(sentences) / batch_size)) * epochs
    model, stats = train_loop(model, batches, steps, learning_rate)
    return model, tokenizer, stats


def tag(model, tokenizer, sentences, labels, seq_length, batch_size=64):
    """Word tags (the first piece's argmax; words cut off by truncation get `O`)."""
    ids = {t: i for i, t in enumerate(labels)}
    predicted = []
    with torch.no_grad():
        for i in range(0, len(sentences), batch_size):
            chunk = sentences[i:i + batch_size]
            enc, _ = _tagging_batch(tokenizer, chunk, ids, seq_length, with_labels=False)
            best = model(**enc).logits.argmax(-1).numpy()
            for b, s in enumerate(chunk):
                tags, previous = ["O"] * len(s.words), None
                for position, w in enumerate(enc.word_ids(b)):
                    if w is not None and w != previous:
                        tags[w] = labels[best[b, position]]
                    previous = w
                predicted.append(tags)
    return predicted


# ----------------------------------------------------------------------------- span question answering
def qa_features(tokenizer, examples, seq_length, overlap, with_labels, padding="longest"):
    """HF fast-tokenizer windows (`stride` = overlap of consecutive windows) with start/end labels from the
    offsets (0, 0 when the answer is not inside a window)."""
    enc = tokenizer([e.question for e in examples], [e.context for e in examples], truncation="only_second",
                    max_length=seq_length, stride=overlap, return_overflowing_tokens=True,
                    return_offsets_mapping=True, padding=padding)
    mapping = enc["overflow_to_sample_mapping"]
    starts, ends = [], []
    for i in range(len(enc["input_ids"])):
        seq_ids, offsets, e = enc.sequence_ids(i), enc["offset_mapping"][i], examples[mapping[i]]
        s = t = 0
        if with_labels and e.answer_start >= 0:
            ctx = [k for k, x in enumerate(seq_ids) if x == 1]
            if ctx and offsets[ctx[0]][0] <= e.answer_start and offsets[ctx[-1]][1] >= e.answer_end:
                s = next(k for k in ctx if offsets[k][1] > e.answer_start)
                t = max(k for k in ctx if offsets[k][0] < e.answer_end)
        starts.append(s)
        ends.append(t)
    return enc, mapping, starts, ends


def question_answerer(model_dir, examples, seq_length, overlap, batch_size, epochs, learning_rate, seed, eps=1e-8):
    """`BertForQuestionAnswering` fine-tuned on SQuAD examples; returns (model, tokenizer, stats)."""
    torch.manual_seed(seed)
    tokenizer = transformers.BertTokenizerFast.from_pretrained(model_dir)
    model = transformers.BertForQuestionAnswering.from_pretrained(model_dir)
    enc, _, starts, ends = qa_features(tokenizer, examples, seq_length, overlap, True, padding="max_length")
    tensors = {k: torch.tensor(enc[k]) for k in ("input_ids", "attention_mask", "token_type_ids")}
    starts, ends = torch.tensor(starts), torch.tensor(ends)
    n = len(starts)

    def batches(epoch):
        for rows in shuffled(n, seed, epoch, batch_size):
            rows = torch.tensor(rows)
            length = int(tensors["attention_mask"][rows].sum(1).max())  # pad each batch to its longest window
            yield dict({k: v[rows, :length] for k, v in tensors.items()},
                       start_positions=starts[rows], end_positions=ends[rows])

    steps = int(np.ceil(n / batch_size)) * epochs
    model, stats = train_loop(model, batches, steps, learning_rate, eps=eps)
    return model, tokenizer, stats


def qa_window_logits(model, tokenizer, examples, seq_length, overlap, batch_size=32):
    """Window outputs in the form `bert_tf.tasks.question_answering.data.best_spans` decodes (so both sides share Google's n-best rule)."""
    enc, mapping, _, _ = qa_features(tokenizer, examples, seq_length, overlap, False, padding="max_length")
    start, end = [], []
    with torch.no_grad():
        for i in range(0, len(enc["input_ids"]), batch_size):
            out = model(**{k: torch.tensor(enc[k][i:i + batch_size])
                           for k in ("input_ids", "attention_mask", "token_type_ids")})
            start.append(out.start_logits.numpy())
            end.append(out.end_logits.numpy())
    start, end = np.concatenate(start), np.concatenate(end)
    cs, ce = np.full(start.shape, -1), np.full(start.shape, -1)
    for i in range(len(start)):
        for k, (sid, (a, b)) in enumerate(zip(enc.sequence_ids(i), enc["offset_mapping"][i])):
            if sid == 1:
                cs[i, k], ce[i, k] = a, b
    return {"example_index": np.array(mapping), "start_logits": start, "end_logits": end,
            "token_char_start": cs, "token_char_end": ce, "token_is_max_context": cs >= 0}
