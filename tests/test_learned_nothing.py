"""A run that learned nothing says so: each task recognises collapsed predictions; the driver warns past warm-up;
fine-tuning defaults to bias-corrected AdamW (Google's exact optimizer one flag away)."""

import os

import numpy as np

from bert_tf.training import finetuning
from bert_tf.tasks.classification import data as glue
from bert_tf.tasks.tagging.data import Sentence
from bert_tf.tasks.question_answering.data import SquadExample
from bert_tf.tasks import QuestionAnsweringTask, SentencePredictionTask, TaggingTask


def _tsv_task(tmp_path, regression=False):
    rows = "sentence\tlabel\na\t1.0\nb\t2.0\n" if regression else "sentence\tlabel\na\tpos\nb\tneg\nc\tneu\n"
    (tmp_path / "train.tsv").write_text(rows)
    return SentencePredictionTask(glue.get_task("tsv", str(tmp_path), regression=regression))


def test_classification_one_class_for_everything(tmp_path):
    task = _tsv_task(tmp_path)
    examples = task.examples("train")
    one = {"predictions": np.array([1, 1, 1]), "labels": np.array([2, 0, 1])}
    # labels sorted: neg, neu, pos
    assert "every one of the 3 examples is predicted as 'neu'" in task.degenerate_predictions(examples, one)
    varied = {"predictions": np.array([1, 0, 1]), "labels": np.array([2, 0, 1])}
    assert task.degenerate_predictions(examples, varied) is None
    # A dev set with one class only: predicting it is not a collapse.
    assert task.degenerate_predictions(examples, {"predictions": np.array([1, 1]), "labels": np.array([1, 1])}) is None


def test_regression_constant_output(tmp_path):
    task = _tsv_task(tmp_path, regression=True)
    examples = task.examples("train")
    flat = {"predictions": np.array([1.5, 1.5001]), "labels": np.array([1.0, 2.0])}
    assert "constant output" in task.degenerate_predictions(examples, flat)
    assert task.degenerate_predictions(examples, {"predictions": np.array([1.1, 1.9]),
                                                  "labels": np.array([1.0, 2.0])}) is None


def test_tagging_no_entity(tmp_path):
    task = TaggingTask(str(tmp_path))
    examples = [Sentence(["John", "lives", "here"], ["B-PER", "O", "O"]), Sentence(["Hi"], ["O"])]
    reason = task.degenerate_predictions(examples, {"tags": [["O", "O", "O"], ["O"]]})
    assert "no entity predicted" in reason and "25.0% of the words" in reason
    assert task.degenerate_predictions(examples, {"tags": [["B-PER", "O", "O"], ["O"]]}) is None


def test_question_answering_empty_or_identical_answers(monkeypatch):
    task = QuestionAnsweringTask(None, None)
    examples = [SquadExample(qas_id=str(i), question="q", context="a b c", answers=["a"]) for i in range(3)]
    monkeypatch.setattr(task, "_answers", lambda outputs: (outputs, None))
    assert "no answer" in task.degenerate_predictions(examples, ["", "", ""])
    assert "same answer 'b'" in task.degenerate_predictions(examples, ["b", "b", "b"])
    assert task.degenerate_predictions(examples, ["a", "b", "c"]) is None


def test_warning_only_past_warmup_and_names_the_causes(tmp_path, capsys):
    task = TaggingTask(str(tmp_path))
    config = finetuning.FinetuneConfig(model_dir=str(tmp_path), learning_rate=1e-4)
    assert finetuning.warn_if_learned_nothing(task, config, {"dev": "no entity"}, step=10, warmup_steps=36) is None
    assert finetuning.warn_if_learned_nothing(task, config, {}, step=100, warmup_steps=36) is None
    text = finetuning.warn_if_learned_nothing(task, config, {"dev": "no entity predicted"}, 120, 36)
    assert "at step 120" in text and "no entity predicted" in text and "--learning_rate=0.0001" in text
    assert "AdamWeightDecay" not in text  # the default optimizer is not a suspect
    google = finetuning.FinetuneConfig(model_dir=str(tmp_path), adam_bias_correction=False)
    assert "--noadam_bias_correction: drop it" in finetuning.warn_if_learned_nothing(task, google, {"dev": "x"}, 9, 1)
    assert "WARNING: tagging: at step 120" in capsys.readouterr().out


def test_finetuning_defaults_to_bias_corrected_adamw():
    assert finetuning.FinetuneConfig(model_dir=os.devnull).adam_bias_correction is True
