"""Distillation (`bert_tf.distillation`, `trainers/distill.py`): the student taken from its teacher, the losses, a
run through the program on real tweets that moves the student towards the teacher, the tagging and QA targets, and
the bad inputs that must stop before training.

The teachers here are the real MiniLM encoder with a confident random head (classification) and small random models
(tagging, QA, with MiniLM's vocabulary): the quality comparison with fine-tuned MiniLM teachers is `bench/distill.py`.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401  (the export's tokenizer ops)

import bert_tf
from bert_tf.distillation import losses
from bert_tf.distillation.student import layer_dropped_encoder, layer_map, parse_layer_map
from bert_tf.distillation.task import DistillConfig, DistillationTask, load_teacher
from bert_tf.tasks import QuestionAnsweringTask, SentencePredictionTask, TaggingTask
from bert_tf.tasks.classification import data as glue
from bert_tf.training import finetuning
from bert_tf.training.settings import ConfigError
from fixtures import conll as conll_data
from fixtures import datasets
from fixtures import squad as squad_data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(path, layers=4):
    config = bert_tf.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                                intermediate_size=64, max_position_embeddings=512)
    with open(path, "w") as f:
        json.dump(config.to_dict(), f)
    return path


@pytest.fixture(scope="module")
def tweets(tmp_path_factory):
    return datasets.tweets_task_dir(str(tmp_path_factory.mktemp("tweets")), train_size=320, dev_size=120,
                                    test_size=100)


@pytest.fixture(scope="module")
def teacher_dir(tweets, minilm_dir, tmp_path_factory):
    """A tweet classifier on the real MiniLM encoder saved as model.keras (what trainers/finetune.py writes). Its head
    is random but scaled so its outputs are confident and depend on the text: a student that copies them has
    something to learn (fine-tuning it first would add minutes and test nothing more here)."""
    work = tmp_path_factory.mktemp("teacher")
    pretrained = bert_tf.from_pretrained(minilm_dir)
    keras.utils.set_random_seed(3)
    teacher = SentencePredictionTask(glue.get_task("tsv", tweets)).build_model(
        pretrained.encoder, bert_tf.BertPreprocessor(pretrained.vocab_file, seq_length=48, dynamic_padding=True))
    teacher.head.kernel.assign(teacher.head.kernel * 30.0)
    teacher.save(str(work / "model.keras"))
    return str(work)


def test_layer_map_spreads_layers_like_distilbert():
    assert layer_map(12, 6) == [0, 2, 4, 7, 9, 11]  # the layers DistilBERT's initialisation takes
    assert layer_map(6, 3) == [0, 2, 5]
    assert layer_map(6, 1) == [5] and layer_map(4, 4) == [0, 1, 2, 3]
    assert parse_layer_map("0, 2,5", 6) == [0, 2, 5]
    for bad in ("2,1", "0,6", "a", "1,1"):
        with pytest.raises(ConfigError, match="student_layer_map"):
            parse_layer_map(bad, 6)
    with pytest.raises(ConfigError, match="cannot be taken"):
        layer_map(3, 4)


def test_losses_are_zero_for_the_teacher_itself_and_respect_masks():
    rng = np.random.default_rng(0)
    t = tf.constant(rng.normal(size=(4, 5)), tf.float32)
    s = tf.constant(rng.normal(size=(4, 5)), tf.float32)
    for kind in ("softmax", "sigmoid", "mse"):
        same = losses.target_loss(losses.DistillTarget(t, kind), losses.DistillTarget(t, kind), 2.0)
        assert abs(float(same)) < 1e-6, kind
        assert float(losses.target_loss(losses.DistillTarget(s, kind), losses.DistillTarget(t, kind), 2.0)) > 0.01
    # KL by hand, temperature 2, scaled by T^2
    p, q = tf.nn.softmax(t / 2), tf.nn.softmax(s / 2)
    expected = 4.0 * float(tf.reduce_mean(tf.reduce_sum(p * (tf.math.log(p) - tf.math.log(q)), -1)))
    got = float(losses.target_loss(losses.DistillTarget(s, "softmax"), losses.DistillTarget(t, "softmax"), 2.0))
    assert got == pytest.approx(expected, rel=1e-5)
    # what a class mask hides (QA padding) and a zero row weight drops (tagging's non-first pieces) never counts
    mask = tf.constant([[1, 1, 1, 0, 0]] * 4)
    noisy = tf.tensor_scatter_nd_update(s, [[0, 4], [1, 3]], [50.0, -50.0])
    a = losses.target_loss(losses.DistillTarget(s, "softmax", class_mask=mask), losses.DistillTarget(t, "softmax"), 1.)
    b = losses.target_loss(losses.DistillTarget(noisy, "softmax", class_mask=mask), losses.DistillTarget(t, "softmax"),
                           1.)
    assert float(a) == pytest.approx(float(b), rel=1e-6)
    rows = tf.constant([1.0, 1.0, 0.0, 0.0])
    c = losses.target_loss(losses.DistillTarget(tf.concat([s[:2], s[2:] + 9.0], 0), "softmax", row_weights=rows),
                           losses.DistillTarget(t, "softmax"), 1.0)
    d = losses.target_loss(losses.DistillTarget(s[:2], "softmax"), losses.DistillTarget(t[:2], "softmax"), 1.0)
    assert float(c) == pytest.approx(float(d), rel=1e-5)


def test_student_from_teacher(teacher_dir, tweets):
    teacher = load_teacher(teacher_dir)
    features = teacher.preprocessor(tf.constant(["what a great day", "this is awful, really"]))
    # every layer kept: the student is the teacher
    task = DistillationTask(SentencePredictionTask(glue.get_task("tsv", tweets)), teacher,
                            DistillConfig(teacher=teacher_dir, student_num_layers=6))
    backbone = task.pretrained_backbone(finetuning.FinetuneConfig(max_seq_length=48))
    same = task.build_model(*backbone)
    np.testing.assert_allclose(same(features), teacher(features), atol=1e-6)
    # three layers: the teacher's 0, 2 and 5, its embeddings, pooler and head
    task = DistillationTask(SentencePredictionTask(glue.get_task("tsv", tweets)), teacher,
                            DistillConfig(teacher=teacher_dir, student_num_layers=3))
    student = task.build_model(*task.pretrained_backbone(finetuning.FinetuneConfig(max_seq_length=48)))
    assert task.layer_map == [0, 2, 5] and student.encoder.config.num_hidden_layers == 3
    for i, j in enumerate([0, 2, 5]):
        for a, b in zip(student.encoder.transformer_layers[i].weights, teacher.encoder.transformer_layers[j].weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(student.head.kernel.numpy(), teacher.head.kernel.numpy())
    np.testing.assert_array_equal(student.encoder.embedding_table.numpy(), teacher.encoder.embedding_table.numpy())
    # the same from a bare encoder (the baseline student's start)
    encoder = layer_dropped_encoder(teacher.encoder, [0, 2, 5])
    ids = {k: features[k] for k in ("input_word_ids", "input_mask", "input_type_ids")}
    np.testing.assert_allclose(encoder(ids)["pooled_output"], student.encoder(ids)["pooled_output"], atol=1e-6)


def _kl_to_teacher(student, teacher, texts):
    features = teacher.preprocessor(tf.constant(texts))
    t = tf.nn.log_softmax(teacher(features), -1)
    s = tf.nn.log_softmax(student(features), -1)
    return float(tf.reduce_mean(tf.reduce_sum(tf.exp(t) * (t - s), -1)))


@pytest.mark.slow
def test_distill_program_moves_the_student_to_its_teacher(teacher_dir, tweets, tmp_path):
    """trainers/distill.py on real tweets (+ unlabelled tweets, hidden-state transfer): the 3-layer student's KL to
    its teacher on held-out tweets falls well below where the layer-dropped start had it; the student is an
    ordinary 3-layer task model (model.keras, serving export on raw text); a rerun resumes and trains nothing."""
    dev_texts = [e.text_a for e in glue.get_task("tsv", tweets).get_examples("dev")]
    unlabelled = tmp_path / "unlabelled.txt"
    unlabelled.write_bytes("\n".join(e.text_a for e in glue.get_task("tsv", tweets).get_examples("test")).encode()
                          + b"\n\xff\xfe not utf-8\n")
    model_dir, export_dir = str(tmp_path / "student"), str(tmp_path / "export")
    args = [sys.executable, os.path.join(ROOT, "trainers", "distill.py"), "--task=tsv", f"--data_dir={tweets}",
            f"--teacher={teacher_dir}", f"--model_dir={model_dir}", "--student_num_layers=3", "--alpha=1.0",
            "--hidden_state_weight=1.0", f"--unlabelled_text_file={unlabelled}", "--do_train", "--do_eval",
            f"--export_dir={export_dir}", "--max_seq_length=48", "--learning_rate=1e-4", "--num_train_epochs=3",
            "--steps_per_loop=10"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=900)
    print(proc.stdout[-4000:])
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "100 unlabelled examples" in proc.stdout
    assert "not UTF-8" in proc.stderr and "distillation_loss" in proc.stdout
    teacher = load_teacher(teacher_dir)
    student = keras.saving.load_model(os.path.join(model_dir, "model.keras"))
    assert type(student) is type(teacher) and student.encoder.config.num_hidden_layers == 3
    task = DistillationTask(SentencePredictionTask(glue.get_task("tsv", tweets)), teacher,
                            DistillConfig(teacher=teacher_dir, student_num_layers=3))
    start = task.build_model(*task.pretrained_backbone(finetuning.FinetuneConfig(max_seq_length=48)))
    before = _kl_to_teacher(start, teacher, dev_texts)
    # model.keras holds the best checkpoint by dev accuracy, which a random teacher does not track: read the last one
    tf.train.Checkpoint(model=start).restore(tf.train.latest_checkpoint(model_dir)).expect_partial()
    after = _kl_to_teacher(start, teacher, dev_texts)
    print(f"KL(teacher || student) on dev: start {before:.4f}, distilled {after:.4f}")
    assert after < 0.75 * before
    served = tf.saved_model.load(os.path.join(export_dir, "1")).signatures["serving_default"]
    out = served(text=tf.constant(dev_texts[:8]))
    np.testing.assert_allclose(out["probabilities"].numpy(), tf.nn.softmax(student(
        student.preprocessor(tf.constant(dev_texts[:8]))), -1).numpy(), atol=1e-5)
    assert json.load(open(os.path.join(model_dir, "eval_results.json")))["global_step"] > 0
    again = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert not [line for line in again.stdout.splitlines() if line.startswith("step ")], again.stdout[-2000:]


def _one_batch_losses(task, teacher, layers):
    distill = DistillationTask(task, teacher, DistillConfig(student_num_layers=layers, hidden_state_weight=1.0))
    student = distill.build_model(*distill.pretrained_backbone(finetuning.FinetuneConfig(max_seq_length=128)))
    batch = next(iter(distill.build_train_dataset(student, task.examples("train")[:16], 8)))
    with tf.GradientTape() as tape:
        loss, metrics = distill.compute_loss(student, batch, training=False)
    grads = tape.gradient(loss, student.trainable_variables)
    assert all(g is not None for g in grads[:3])
    return {k: float(v) for k, v in metrics.items()}


def test_tagging_and_qa_students_learn_from_their_teachers(minilm_dir, tmp_path):
    """The tagging and span-QA targets: zero against the teacher itself, positive for a 2-layer student."""
    vocab = os.path.join(minilm_dir, "vocab.txt")
    pre = bert_tf.BertPreprocessor(vocab, seq_length=128, dynamic_padding=True)
    config = bert_tf.BertConfig.from_json_file(tiny_config(str(tmp_path / "c.json")))
    tagging = TaggingTask(conll_data.subset_dir(str(tmp_path / "conll"), train=16, valid=4, test=4))
    train, _ = squad_data.split_by_article(squad_data.squad_v11_dev(), 2)
    squad = QuestionAnsweringTask(squad_data.write_json(squad_data.spread_questions(train, 16),
                                                        str(tmp_path / "train.json")))
    for task in (tagging, squad):
        keras.utils.set_random_seed(0)
        teacher = task.build_model(bert_tf.BertEncoder(config), pre)
        teacher.head.kernel.assign(teacher.head.kernel * 300.0)  # outputs far from uniform, as a trained head's
        same = _one_batch_losses(task, teacher, 4)
        fewer = _one_batch_losses(task, teacher, 2)
        print(task.name, same, fewer)
        assert same["distillation_loss"] < 1e-6 and same["hidden_state_loss"] < 1e-10, (task.name, same)
        assert fewer["distillation_loss"] > 1e-3 and fewer["hidden_state_loss"] > 1e-5, (task.name, fewer)


def test_bad_input_stops_before_training(teacher_dir, tweets, minilm_dir, tmp_path):
    teacher = load_teacher(teacher_dir)
    base = dict(model_dir=str(tmp_path / "s"), do_train=True, max_seq_length=48)

    def check(distill_config, **run):
        task = DistillationTask(SentencePredictionTask(glue.get_task("tsv", tweets)), teacher, distill_config)
        finetuning.check(task, finetuning.FinetuneConfig(**{**base, **run}))
        return task

    with pytest.raises(ConfigError, match="no such file"):
        load_teacher(str(tmp_path / "nothing"))
    export = tmp_path / "export"
    export.mkdir()
    (export / "saved_model.pb").write_bytes(b"")
    with pytest.raises(ConfigError, match="serving SavedModel holds only"):
        load_teacher(str(export))
    (tmp_path / "broken.keras").write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="cannot load it"):
        load_teacher(str(tmp_path / "broken.keras"))
    with pytest.raises(ConfigError, match="cannot be taken"):
        task = check(DistillConfig(student_num_layers=9))
        task.build_model(*task.pretrained_backbone(finetuning.FinetuneConfig(**base)))
    with pytest.raises(ConfigError, match="not both"):
        check(DistillConfig(student_num_layers=2, student_layer_map="0,1"))
    with pytest.raises(ConfigError, match="no such file"):
        check(DistillConfig(unlabelled_text_file=str(tmp_path / "missing.txt")))
    with pytest.raises(ConfigError, match="teacher's vocabulary"):
        check(DistillConfig(), vocab_file=os.path.join(minilm_dir, "vocab.txt"))
    # a tagging teacher for tweet classification
    conll = conll_data.subset_dir(str(tmp_path / "conll"), train=8, valid=2, test=2)
    tagger = TaggingTask(conll).build_model(teacher.encoder, teacher.preprocessor)
    task = DistillationTask(SentencePredictionTask(glue.get_task("tsv", tweets)), tagger, DistillConfig())
    with pytest.raises(ConfigError, match="BertTokenTagger"):
        task.build_model(*task.pretrained_backbone(finetuning.FinetuneConfig(**base)))
    # a student of another vocabulary
    small_vocab = tmp_path / "vocab.txt"
    small_vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"]) + "\n")
    with open(tmp_path / "small.json", "w") as f:
        json.dump({**json.load(open(tiny_config(str(tmp_path / "c.json")))), "vocab_size": 7}, f)
    run = finetuning.FinetuneConfig(**{**base, "bert_config_file": str(tmp_path / "small.json"),
                                       "vocab_file": str(small_vocab)})
    task = check(DistillConfig(), bert_config_file=run.bert_config_file, vocab_file=run.vocab_file)
    encoder, pre = finetuning.load_pretrained(run)
    with pytest.raises(ConfigError, match="another vocabulary"):
        task.build_model(encoder, pre)
    # unlabelled text where the task has no single text to give it
    lines = tmp_path / "u.txt"
    lines.write_text("some text\n")
    squad = QuestionAnsweringTask(squad_data.write_json(squad_data.spread_questions(
        squad_data.split_by_article(squad_data.squad_v11_dev(), 2)[0], 4), str(tmp_path / "t.json")))
    with pytest.raises(ConfigError, match="unlabelled text is not supported"):
        DistillationTask(squad, teacher, DistillConfig(unlabelled_text_file=str(lines))).check(
            finetuning.FinetuneConfig(**base))
