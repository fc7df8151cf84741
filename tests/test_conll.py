"""CoNLL reading and conlleval's entity-level rules, on hand-worked cases (IOB1, IOB2, BIOES, I- after O)."""

import os

import pytest

from bert_tf.tasks.tagging import data as conll

from bert_tf.tasks.tagging import metrics as conll_metrics


def _write(path, text):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return str(path)


def test_reader_columns_docstart_and_malformed_lines(tmp_path, capsys):
    path = _write(tmp_path / "train.txt",
                  "-DOCSTART- -X- -X- O\n\n"
                  "EU NNP B-NP B-ORG\nrejects\tVBZ\tB-VP\tO\nGerman JJ B-NP B-MISC\n\n"
                  "Peter B-PER\nBlackburn I-PER\nbroken\n\n"
                  "-DOCSTART- O\nx B_PER\nLondon B-LOC\n")
    sentences = conll.read_conll(path)
    assert [s.words for s in sentences] == [["EU", "rejects", "German"], ["Peter", "Blackburn"], ["London"]]
    assert [s.tags for s in sentences] == [["B-ORG", "O", "B-MISC"], ["B-PER", "I-PER"], ["B-LOC"]]
    assert sentences[0].source.endswith("train.txt:3")
    captured = capsys.readouterr()
    assert f"{path}:9: malformed line (needs a token and a tag)" in captured.err
    assert f"{path}:12: malformed line (tag 'B_PER'" in captured.err
    assert "read 3 sentences (6 tokens)" in captured.out and "skipped 2 malformed lines" in captured.out
    with pytest.raises(conll.MalformedLineError, match=r"train\.txt:9"):
        conll.read_conll(path, strict=True)


def test_unlabelled_file_keeps_tokens(tmp_path):
    path = _write(tmp_path / "test.txt", "Hello\nworld\n\nBye\n")
    sentences = conll.read_conll(path, labelled=False)
    assert [s.words for s in sentences] == [["Hello", "world"], ["Bye"]] and sentences[0].tags is None


def test_tag_scheme_detection_and_label_order():
    assert conll.detect_tag_scheme([["B-PER", "I-PER", "O", "B-LOC"]]) == "IOB2"
    assert conll.detect_tag_scheme([["I-PER", "I-PER", "O", "I-LOC", "B-LOC"]]) == "IOB1"
    assert conll.detect_tag_scheme([["B-PER", "I-LOC"]]) == "IOB1"  # I- of another type starts an entity
    assert conll.detect_tag_scheme([["B-PER", "E-PER", "S-LOC"]]) == "BIOES"
    assert conll.label_list([["I-PER", "O", "B-LOC", "I-LOC", "B-PER"]]) == ["O", "B-LOC", "I-LOC", "B-PER",
                                                                             "I-PER"]


@pytest.mark.parametrize("tags, want", [
    # IOB2
    (["B-PER", "I-PER", "O", "B-LOC"], [("PER", 0, 2), ("LOC", 3, 4)]),
    # I- after O starts an entity (conlleval; IOB1 and broken IOB2 alike)
    (["O", "I-PER", "I-PER", "O"], [("PER", 1, 3)]),
    # IOB1: B- separates two adjacent entities of one type
    (["I-LOC", "I-LOC", "B-LOC", "I-LOC", "O"], [("LOC", 0, 2), ("LOC", 2, 4)]),
    # a type change inside a run ends one entity and starts another
    (["B-PER", "I-ORG", "I-ORG"], [("PER", 0, 1), ("ORG", 1, 3)]),
    # B- after B- of the same type: two entities
    (["B-PER", "B-PER"], [("PER", 0, 1), ("PER", 1, 2)]),
    # BIOES
    (["S-LOC", "B-PER", "I-PER", "E-PER", "O", "S-ORG", "S-ORG"],
     [("LOC", 0, 1), ("PER", 1, 4), ("ORG", 5, 6), ("ORG", 6, 7)]),
    # an entity running to the end of the sentence is closed there
    (["O", "B-MISC", "I-MISC"], [("MISC", 1, 3)]),
    ([], []),
])
def test_chunks_follow_conlleval(tags, want):
    assert conll_metrics.chunks(tags) == want


def test_evaluate_micro_per_type_and_accuracy():
    gold = [["B-PER", "I-PER", "O", "B-LOC", "O"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG", "O"], ["I-ORG", "O"]]
    # gold: PER(0,2) LOC(3,4) ORG(0,1); predicted: PER(0,2) ORG(3,4) ORG(0,1) -> 2 of 3 right both ways.
    r = conll_metrics.evaluate(gold, pred)
    assert r["precision"] == pytest.approx(2 / 3) and r["recall"] == pytest.approx(2 / 3)
    assert r["f1"] == pytest.approx(2 / 3)
    assert r["accuracy"] == pytest.approx(5 / 7)  # B-LOC vs B-ORG and B-ORG vs I-ORG differ
    assert r["per_type"]["PER"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    assert r["per_type"]["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert r["per_type"]["ORG"]["precision"] == 0.5 and r["per_type"]["ORG"]["recall"] == 1.0
    flat = conll_metrics.flat_metrics(r)
    assert flat["ORG_f1"] == pytest.approx(2 / 3) and "per_type" not in flat
    # A partly right span is wrong; no predicted entity at all gives 0, not a division error.
    assert conll_metrics.evaluate([["B-PER", "I-PER"]], [["B-PER", "O"]])["f1"] == 0.0
    assert conll_metrics.evaluate([["O"]], [["O"]])["f1"] == 0.0
    with pytest.raises(ValueError, match="2 gold tags but 1"):
        conll_metrics.evaluate([["O", "O"]], [["O"]])


def test_write_predictions(tmp_path):
    sentences = [conll.Sentence(["EU", "rejects"], ["B-ORG", "O"]), conll.Sentence(["Hi"], None)]
    path = conll.write_predictions(str(tmp_path / "predictions.txt"), sentences, [["B-ORG", "O"], ["O"]])
    assert open(path).read() == "EU B-ORG B-ORG\nrejects O O\n\nHi O\n\n"
    assert not os.path.exists(path + ".tmp")
