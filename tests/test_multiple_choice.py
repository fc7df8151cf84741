"""Multiple choice (`--task=multiple_choice`): the reader's layouts and its errors by file:line, packing, the
model against Hugging Face `BertForMultipleChoice` on the same weights, the serving export (check_serving_ops,
TF1-session load as TF Serving does, TF 2.12), the `.keras` round trip, and a short real fine-tuning run on
HellaSwag."""

import json
import os
import subprocess

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_text  # noqa: E402,F401  (registers the ops the export uses)

import bert_tf  # noqa: E402
from bert_tf import tasks  # noqa: E402
from bert_tf.export import saved_model as export_lib  # noqa: E402
from bert_tf.export.serving_ops import check_serving_ops  # noqa: E402
from bert_tf.tasks.multiple_choice import MultipleChoiceTask  # noqa: E402
from bert_tf.tasks.multiple_choice import data as choice_data  # noqa: E402
from bert_tf.tasks.multiple_choice.model import BertMultipleChoice  # noqa: E402
from bert_tf.training import finetuning, train_step  # noqa: E402
from bert_tf.training.optimization import create_optimizer  # noqa: E402
from fixtures import multiple_choice as hellaswag  # noqa: E402

CONTEXTS = ["A man is sitting on a roof.", "   ", "Water boils at 100 degrees at sea level, café 北京!"]
QUESTIONS = ["he", "Which gas do plants take in?", ""]
OPTIONS = [["starts pulling up roofing on a roof.", "is holding a rubik's cube.", "is ripping level tiles off."],
           ["carbon dioxide", "helium", ""],
           ["", "  ", ""]]


def _write(path, text):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return str(path)


# ---------------------------------------------------------------------------------------------- reader
def test_reader_layouts_swag_csv_hellaswag_and_arc_jsonl(tmp_path):
    swag = _write(tmp_path / "train.csv", "video-id,startphrase,sent1,sent2,ending0,ending1,ending2,label\n"
                  'v1,"A man sits. He","A man sits.",He,"stands, then.",sleeps.,eats.,0\n')
    ex = choice_data.read_choices(swag, log=False).examples[0]
    assert (ex.context, ex.question, ex.options, ex.label) == ("A man sits.", "He", ("stands, then.", "sleeps.",
                                                                                     "eats."), 0)
    row = hellaswag.hellaswag_rows()[0]  # the real HellaSwag layout, as the fixture writes it
    ex = choice_data.read_choices(hellaswag.write_jsonl([row], str(tmp_path / "hs.jsonl")), log=False).examples[0]
    assert (ex.context, ex.question, list(ex.options), ex.label) == (row["ctx_a"], row["ctx_b"], row["endings"],
                                                                     int(row["label"]))
    assert ex.example_id == str(row["ind"])
    arc = _write(tmp_path / "arc.jsonl", json.dumps({"id": "q1", "question": "Which is a gas?", "choices": {
        "text": ["iron", "oxygen", "salt"], "label": ["A", "B", "C"]}, "answerKey": "B"}) + "\n")
    ex = choice_data.read_choices(arc, log=False).examples[0]
    assert (ex.context, ex.question, ex.label, ex.example_id) == ("", "Which is a gas?", 1, "q1")


def test_reader_reports_malformed_rows_by_file_and_line(tmp_path, capsys):
    rows = [{"context": "ok", "endings": ["a", "b", "c"], "label": 2},
            {"context": "fewer", "endings": ["a", "b"], "label": 0},
            {"context": "none", "endings": [], "label": 0},
            {"context": "blank option", "endings": ["a", " \t", "c"], "label": 0},
            {"context": " ", "question": "", "endings": ["a", "b", "c"], "label": 0},
            {"context": "label", "endings": ["a", "b", "c"], "label": 3},
            {"context": "unlabelled test row", "endings": ["a", "b", "c"]}]
    path = _write(tmp_path / "dev.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n{not json\n")
    data = choice_data.read_choices(path)
    out = capsys.readouterr().out
    assert [e.context for e in data.examples] == ["ok", "unlabelled test row"] and data.skipped == 6
    assert f"{path}:2: 2 options, expected 3" in out
    assert f"{path}:3: 0 options" in out and f"{path}:4: option 1 is empty or only whitespace" in out
    assert f"{path}:5: both context and question are empty" in out and f"{path}:6: label 3 is not one" in out
    assert f"{path}:8: not JSON" in out and "skipped 6 malformed rows" in out
    with pytest.raises(choice_data.MalformedRowError, match=r"dev\.jsonl:2: 2 options, expected 3"):
        choice_data.read_choices(path, strict=True, log=False)
    with pytest.raises(choice_data.MalformedRowError, match=r"dev\.jsonl:1: 3 options, expected 4"):
        choice_data.read_choices(path, num_choices=4, strict=True, log=False)


# ---------------------------------------------------------------------------------------------- model
@pytest.fixture(scope="module")
def minilm_choice(minilm_dir):
    """The real MiniLM encoder under a multiple-choice head (seeded), with its preprocessor."""
    pretrained = bert_tf.from_pretrained(minilm_dir)
    pre = bert_tf.BertPreprocessor(pretrained.vocab_file, seq_length=64)
    keras.utils.set_random_seed(1)
    model = BertMultipleChoice(pretrained.encoder, pre, num_choices=3)
    model.build()
    return model


def test_logits_match_hugging_face_bert_for_multiple_choice(minilm_choice, minilm_dir):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hf = transformers.BertForMultipleChoice.from_pretrained(minilm_dir).eval()
    kernel, bias = minilm_choice.head.get_weights()
    with torch.no_grad():  # the same head in both
        hf.classifier.weight.copy_(torch.tensor(kernel.T))
        hf.classifier.bias.copy_(torch.tensor(bias))
    contexts, questions, options = CONTEXTS[:2], QUESTIONS[:2], [OPTIONS[0], ["carbon dioxide", "helium", "neon"]]
    ours = minilm_choice(minilm_choice.pack_choices(contexts, questions, options), training=False).numpy()
    tok = transformers.BertTokenizerFast.from_pretrained(minilm_dir)
    firsts = [c if c.strip() else q for c, q in zip(contexts, questions) for _ in range(3)]
    seconds = [f"{q} {o}".strip() if c.strip() else o for c, q, opts in zip(contexts, questions, options)
               for o in opts]
    enc = tok(firsts, seconds, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        theirs = hf(**{k: v.view(2, 3, -1) for k, v in enc.items()}).logits.numpy()
    np.testing.assert_allclose(ours, theirs, atol=2e-4)


def _torch_adamw(torch, transformers, hf, learning_rate, steps, warmup, eps):
    """torch AdamW as the HF examples set it up: decay 0.01 except biases and LayerNorm, linear warmup/decay."""
    no_decay = ("bias", "LayerNorm")
    groups = [{"params": [p for n, p in hf.named_parameters() if not any(k in n for k in no_decay)],
               "weight_decay": 0.01},
              {"params": [p for n, p in hf.named_parameters() if any(k in n for k in no_decay)], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=learning_rate, eps=eps)
    return optimizer, transformers.get_linear_schedule_with_warmup(optimizer, warmup, steps)


def test_training_steps_match_hugging_face(minilm_dir, tmp_path):
    """Training, not only the forward pass: from the same weights and head, on the same HellaSwag batches with
    dropout off, our optimizer steps (finetuning's `create_optimizer`, the Trainer's `TrainStep`: AdamW with bias
    correction, eps 1e-6, decay 0.01 except biases and LayerNorm, warmup then linear decay, clip 1.0) and torch's
    AdamW on `BertForMultipleChoice` give the same losses and the same trained logits; the same parameters are
    weight-decayed on both sides."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    steps, batch, learning_rate = 4, 4, 1e-4
    rows = hellaswag.hellaswag_rows("activitynet")[:steps * batch]
    pretrained = bert_tf.from_pretrained(minilm_dir)
    keras.utils.set_random_seed(3)
    model = BertMultipleChoice(pretrained.encoder, bert_tf.BertPreprocessor(pretrained.vocab_file, seq_length=64))
    model.build()
    features = {k: v.numpy() for k, v in model.pack_choices([r["ctx_a"] for r in rows], [r["ctx_b"] for r in rows],
                                                             [r["endings"] for r in rows]).items()}
    labels = np.array([int(r["label"]) for r in rows], np.int32)
    hf = transformers.BertForMultipleChoice.from_pretrained(minilm_dir, hidden_dropout_prob=0.0,
                                                            attention_probs_dropout_prob=0.0)
    kernel, bias = model.head.get_weights()
    with torch.no_grad():
        hf.classifier.weight.copy_(torch.tensor(kernel.T))
        hf.classifier.bias.copy_(torch.tensor(bias))

    strategy = tf.distribute.get_strategy()
    optimizer = train_step.prepare_optimizer(create_optimizer("adamw", learning_rate, steps, 1, bias_correction=True),
                                             strategy, None, clip_norm=1.0)
    optimizer.build(model.trainable_variables)
    decayed = sum(int(np.prod(v.shape)) for v in model.trainable_variables if optimizer.uses_weight_decay(v))
    task = MultipleChoiceTask(str(tmp_path))
    step = train_step.TrainStep(model, optimizer, lambda m, b, training: task.compute_loss(m, b, training=False),
                                strategy, tf.Variable(0, tf.int64))
    loop, batches = step.loop("slice"), iter(tf.data.Dataset.from_tensor_slices((features, labels)).batch(batch))
    ours = [float(step.run_loop(loop, batches, 1, i)[0]["loss"]) for i in range(steps)]

    torch_optimizer, schedule = _torch_adamw(torch, transformers, hf, learning_rate, steps, 1, eps=1e-6)
    assert decayed == sum(p.numel() for g in torch_optimizer.param_groups if g["weight_decay"] for p in g["params"])
    pt = {"input_ids": "input_word_ids", "attention_mask": "input_mask", "token_type_ids": "input_type_ids"}
    theirs = []
    for i in range(steps):
        inputs = {k: torch.tensor(features[v][i * batch:(i + 1) * batch]).long() for k, v in pt.items()}
        loss = hf(**inputs, labels=torch.tensor(labels[i * batch:(i + 1) * batch]).long()).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
        torch_optimizer.step()
        schedule.step()
        torch_optimizer.zero_grad()
        theirs.append(float(loss.detach()))
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    with torch.no_grad():
        trained = hf.eval()(**{k: torch.tensor(features[v]).long() for k, v in pt.items()}).logits.numpy()
    np.testing.assert_allclose(model(features, training=False).numpy(), trained, atol=2e-5)


def test_blank_options_get_no_probability(minilm_choice):
    out = minilm_choice.choose(tf.constant(CONTEXTS), tf.constant(QUESTIONS), tf.constant(OPTIONS))
    probabilities, choice = out["probabilities"].numpy(), out["choice"].numpy()
    np.testing.assert_allclose(probabilities[:2].sum(-1), 1.0, atol=1e-6)
    assert probabilities[1, 2] == 0.0 and choice[1] in (0, 1)
    assert choice[2] == -1 and not probabilities[2].any()  # an item whose options are all blank


def test_keras_round_trip(minilm_choice, tmp_path):
    path = str(tmp_path / "m.keras")
    minilm_choice.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, BertMultipleChoice) and loaded.num_choices == 3
    want = minilm_choice.choose(CONTEXTS, QUESTIONS, OPTIONS)["probabilities"].numpy()
    np.testing.assert_allclose(loaded.choose(CONTEXTS, QUESTIONS, OPTIONS)["probabilities"].numpy(), want,
                               atol=1e-6)


# ---------------------------------------------------------------------------------------------- export
_TF212_SCRIPT = r"""
import json, sys
import tensorflow as tf, tensorflow_text
assert tf.__version__.startswith("2.12"), tf.__version__
feed = json.loads(sys.argv[2])
with tf.compat.v1.Session(graph=tf.Graph()) as sess:
    meta = tf.compat.v1.saved_model.load(sess, ["serve"], sys.argv[1])
    sig = meta.signature_def["serving_default"]
    res = sess.run({k: v.name for k, v in sig.outputs.items()}, {sig.inputs[k].name: v for k, v in feed.items()})
print(json.dumps({k: v.tolist() for k, v in res.items()}))
"""


@pytest.fixture(scope="module")
def exported(minilm_choice, tmp_path_factory):
    return minilm_choice.export(str(tmp_path_factory.mktemp("export") / "mc"), task="multiple_choice")


def test_export_serves_in_a_tf1_session_and_in_tf_2_12(minilm_choice, exported, tf212_python):
    assert check_serving_ops(exported) == ["FastBertNormalize", "FastWordpieceTokenizeWithOffsets", "NormalizeUTF8"]
    assert export_lib.read_metadata(exported)["task"] == "multiple_choice"
    want = minilm_choice.choose(CONTEXTS, QUESTIONS, OPTIONS)
    feed = {"context": CONTEXTS, "question": QUESTIONS, "options": OPTIONS}
    with tf.compat.v1.Session(graph=tf.Graph()) as sess:  # TF Serving's loader
        meta = tf.compat.v1.saved_model.load(sess, ["serve"], exported)
        got = {}
        for name in ("serving_default", "without_question"):
            sig = meta.signature_def[name]
            got[name] = sess.run({k: v.name for k, v in sig.outputs.items()},
                                 {sig.inputs[k].name: feed[k] for k in sig.inputs})
    np.testing.assert_allclose(got["serving_default"]["probabilities"], want["probabilities"], atol=1e-5)
    assert got["serving_default"]["choice"].tolist() == want["choice"].numpy().tolist()
    no_question = minilm_choice.choose(CONTEXTS, ["", "", ""], OPTIONS)["probabilities"].numpy()
    np.testing.assert_allclose(got["without_question"]["probabilities"], no_question, atol=1e-5)
    proc = subprocess.run([tf212_python, "-c", _TF212_SCRIPT, exported, json.dumps(feed)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    old = json.loads(proc.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(old["probabilities"], want["probabilities"], atol=1e-5)
    assert old["choice"] == want["choice"].numpy().tolist()


# ---------------------------------------------------------------------------------------------- fine-tuning
def test_finetune_on_hellaswag_trains_evaluates_predicts_and_exports(minilm_dir, tmp_path):
    data_dir = hellaswag.hellaswag_task_dir(str(tmp_path / "data"), train=16, dev=8, test=4, origin="activitynet")
    assert tasks.task_class("multiple_choice") is MultipleChoiceTask
    config = finetuning.FinetuneConfig(model_dir=str(tmp_path / "model"), init_checkpoint=minilm_dir,
                                       max_seq_length=64, train_batch_size=8, num_train_epochs=1,
                                       learning_rate=5e-5, bucket_window=2, do_train=True, do_eval=True,
                                       do_predict=True, export_dir=str(tmp_path / "export"))
    results = finetuning.run(MultipleChoiceTask(data_dir), config)
    assert 0.0 <= results["accuracy"] <= 1.0 and results["global_step"] == 2
    with open(tmp_path / "model" / "predictions.jsonl") as f:
        predictions = [json.loads(line) for line in f]
    assert len(predictions) == 4 and all(len(p["probabilities"]) == 4 for p in predictions)
    with open(tmp_path / "model" / "eval_results.json") as f:
        assert "test_accuracy" in json.load(f)
    served = tf.saved_model.load(str(tmp_path / "export" / "1"))
    test = MultipleChoiceTask(data_dir).examples("test")
    out = served.serving_default(context=tf.constant([e.context for e in test]),
                                 question=tf.constant([e.question for e in test]),
                                 options=tf.constant([list(e.options) for e in test]))
    assert out["choice"].numpy().tolist() == [p["choice"] for p in predictions]


def test_served_over_rest_with_an_options_matrix(minilm_choice, exported):
    """serving/server.py (TF Serving's REST protocol) takes `options` as a [B, N] string matrix, rows padded
    with "" (which get no probability)."""
    import urllib.request

    from serving.testing import ServerProcess

    want = minilm_choice.choose(CONTEXTS, QUESTIONS, OPTIONS)
    srv = ServerProcess(["--model_name=mc", f"--model_base_path={os.path.dirname(exported)}"], ready_model="mc")
    try:
        body = {"instances": [{"context": c, "question": q, "options": o}
                              for c, q, o in zip(CONTEXTS, QUESTIONS, OPTIONS)]}
        request = urllib.request.Request(f"http://{srv.rest_address}/v1/models/mc:predict",
                                         data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=120) as r:
            got = json.loads(r.read())["predictions"]
    finally:
        srv.terminate()
    np.testing.assert_allclose([g["probabilities"] for g in got], want["probabilities"].numpy(), atol=1e-5)
    assert [g["choice"] for g in got] == want["choice"].numpy().tolist()
