"""LiteRT export of the multiple-choice model (bert_tf.tasks.multiple_choice.litert): context, question and an
options matrix of raw strings in a .tflite run by ai_edge_litert's InterpreterWithCustomOps, against the Keras
model on real HellaSwag items (fixtures/multiple_choice.py), and through the fine-tuning driver at int8.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import bert_tf
from bert_tf.tasks.multiple_choice import MultipleChoiceTask
from bert_tf.tasks.multiple_choice import litert as choice_litert
from bert_tf.tasks.multiple_choice.model import BertMultipleChoice
from bert_tf.training import finetuning
from fixtures import multiple_choice as hellaswag

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _items():
    """Ten real HellaSwag items made to cover the edge cases: a shorter option list ("" padding), a blank context
    (the question packs first), an item with no option left, and non-ASCII text."""
    rows = hellaswag.hellaswag_rows("activitynet")[:10]
    contexts, questions = [r["ctx_a"] for r in rows], [r["ctx_b"] for r in rows]
    options = [list(r["endings"]) for r in rows]
    options[1][3] = ""                                 # three options, padded
    contexts[2], questions[2] = "   ", rows[2]["ctx_a"]  # ARC-style: no context
    options[3] = ["", "  ", "", ""]                    # nothing to choose
    contexts[4] = contexts[4] + " café 北京"
    return contexts, questions, options


@pytest.fixture(scope="module")
def minilm_choice(minilm_dir):
    """The real MiniLM encoder under a seeded multiple-choice head (scaled so options are clearly apart)."""
    pretrained = bert_tf.from_pretrained(minilm_dir)
    keras.utils.set_random_seed(1)
    model = BertMultipleChoice(pretrained.encoder, bert_tf.BertPreprocessor(pretrained.vocab_file, seq_length=64),
                               num_choices=4)
    model.build()
    kernel, bias = model.head.get_weights()
    model.head.set_weights([kernel * 20, bias])
    return model


@pytest.fixture(scope="module")
def float_export(minilm_choice, tmp_path_factory):
    return minilm_choice.export_litert(str(tmp_path_factory.mktemp("mc_litert") / "f32"), precision="float32")


def test_float32_equals_the_keras_model_on_hellaswag(minilm_choice, float_export):
    contexts, questions, options = _items()
    runner = choice_litert.LiteRTMultipleChoice(float_export)
    got = runner.choose(contexts, questions, options)
    want = {k: v.numpy() for k, v in minilm_choice.choose(contexts, questions, options).items()}
    print("float32 max |p - p_keras|:", np.abs(got["probabilities"] - want["probabilities"]).max())
    np.testing.assert_allclose(got["probabilities"], want["probabilities"], atol=1e-5)
    np.testing.assert_array_equal(got["choice"], want["choice"])
    assert got["choice"][3] == -1 and not got["probabilities"][3].any() and got["probabilities"][1, 3] == 0.0
    # Items one at a time (as on a device) and with their own option counts: the same numbers.
    one = runner.choose(contexts[1:2], questions[1:2], [options[1][:3]])
    np.testing.assert_allclose(one["probabilities"][0], want["probabilities"][1, :3], atol=1e-5)


def test_no_question_and_tokenize_are_the_saved_model_packing(minilm_choice, float_export):
    contexts, _, options = _items()
    runner = choice_litert.LiteRTMultipleChoice(float_export)
    got = runner.choose(contexts[:5], None, options[:5])
    want = minilm_choice.choose(contexts[:5], [""] * 5, options[:5])
    np.testing.assert_allclose(got["probabilities"], want["probabilities"].numpy(), atol=1e-5)
    contexts, questions, options = _items()
    ids = runner.tokenize(contexts, questions, options)
    pre = minilm_choice.preprocessor.with_padding(dynamic_padding=True, pad_to_multiple_of=1)
    packed = minilm_choice.pack_choices(contexts, questions, options, preprocessor=pre)
    for key in ("input_word_ids", "input_mask", "input_type_ids"):
        np.testing.assert_array_equal(ids[key], packed[key].numpy())


def test_metadata_and_bad_input(minilm_choice, float_export, tmp_path):
    metadata = json.load(open(float_export.replace("model.tflite", "model.json")))
    assert metadata["format"] == "bert_tf LiteRT multiple choice" and metadata["task"] == "multiple_choice"
    assert metadata["num_choices"] == 4 and metadata["max_seq_length"] == 64 and metadata["precision"] == "float32"
    assert set(metadata["signatures"]) == {"serving_default", "tokenize"}
    assert metadata["inputs"] == ["context", "question", "options"] and metadata["outputs"] == ["choice",
                                                                                               "probabilities"]
    runner = choice_litert.LiteRTMultipleChoice(float_export)
    with pytest.raises(ValueError, match="2 contexts, 1 option lists"):
        runner.choose(["a", "b"], ["q", "q"], [["x", "y"]])
    with pytest.raises(ValueError, match=r"\(context, question, options\) items.*item 0"):
        minilm_choice.export_litert(str(tmp_path / "i8"), precision="int8", representative_texts=["just a text"])
    assert not (tmp_path / "i8").exists()


def test_finetune_driver_writes_an_int8_export(minilm_vocab, tmp_path):
    """--litert_export_dir on a multiple-choice run: a tiny encoder on the real vocabulary, trained 4 steps on
    HellaSwag, full int8 calibrated on training items (the task's representative items); the .tflite stays close to
    the model.keras of the same run. (4 steps leave the options near-uniform: this checks the wiring and the
    calibration path; the int8 agreement on MiniLM is measured separately, README.)"""
    keras.utils.set_random_seed(0)
    encoder = bert_tf.BertEncoder(bert_tf.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                                                     num_attention_heads=2, intermediate_size=64))
    bert_dir = str(tmp_path / "tiny_bert")
    bert_tf.save_pretrained(encoder, bert_dir, minilm_vocab, lower_case=True)
    data_dir = hellaswag.hellaswag_task_dir(str(tmp_path / "data"), train=32, dev=8, test=16, origin="activitynet")
    config = finetuning.FinetuneConfig(
        model_dir=str(tmp_path / "model"), init_checkpoint=bert_dir, max_seq_length=48, train_batch_size=8,
        num_train_epochs=1, learning_rate=1e-3, do_train=True, litert_export_dir=str(tmp_path / "lite"),
        litert_precision="int8", representative_examples=12)
    task = MultipleChoiceTask(data_dir)
    finetuning.run(task, config)
    metadata = json.load(open(tmp_path / "lite" / "model.json"))
    assert (metadata["task"], metadata["precision"], metadata["representative_examples"]) == (
        "multiple_choice", "int8", 12)
    model = keras.saving.load_model(str(tmp_path / "model" / "model.keras"))
    test = task.examples("test")
    items = ([e.context for e in test], [e.question for e in test], [list(e.options) for e in test])
    got = choice_litert.LiteRTMultipleChoice(str(tmp_path / "lite")).choose(*items)
    want = model.choose(*items)
    gap = np.abs(got["probabilities"] - want["probabilities"].numpy())
    agree = float(np.mean(got["choice"] == want["choice"].numpy()))
    print(f"int8 vs Keras: max |p - p_keras| {gap.max():.4f}, mean {gap.mean():.4f}, same choice {agree:.2%}")
    assert gap.mean() < 0.02 and gap.max() < 0.1
    np.testing.assert_allclose(got["probabilities"].sum(-1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(got["choice"], got["probabilities"].argmax(-1))
    assert len(task.representative_texts(5)) == 5 and len(task.representative_texts(5)[0][2]) == 4

    # trainers/export.py calibrates a multiple-choice model on the items of a task file (its own reader)
    export = subprocess.run([sys.executable, os.path.join(ROOT, "trainers", "export.py"),
                             f"--keras_model={tmp_path / 'model' / 'model.keras'}", "--task=multiple_choice",
                             f"--litert_export_dir={tmp_path / 'lite_program'}", "--litert_precision=int8",
                             f"--representative_file={data_dir}/train.jsonl", "--representative_examples=12"],
                            capture_output=True, text=True, timeout=600)
    assert export.returncode == 0, export.stderr[-3000:]
    metadata = json.load(open(tmp_path / "lite_program" / "model.json"))
    assert (metadata["precision"], metadata["representative_examples"]) == ("int8", 12)
    program = choice_litert.LiteRTMultipleChoice(str(tmp_path / "lite_program")).choose(*items)
    assert np.abs(program["probabilities"] - want["probabilities"].numpy()).mean() < 0.02
