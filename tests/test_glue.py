"""GLUE readers on files written here in GLUE's exact distributed layout, and the tsv/csv custom task.

Column facts checked against GLUE's files and google-research/bert's processors:
CoLA train/dev are header-less with 4 fields (label at 1, sentence at 3) and its
test.tsv has the header ``index sentence``; MRPC's label is ``Quality`` (field 0)
with strings at 3 and 4; STS-B sentences at 7, 8 and the score last; QQP
questions at 3, 4 and ``is_duplicate`` at 5, test ``id question1 question2``;
MNLI sentences at 8, 9 and ``gold_label`` last (12 fields in train, 16 in dev,
10 in test); QNLI/RTE/WNLI ``index s1 s2 label``.
"""

import os

import pytest

from bert_tf.tasks.classification import data as glue


def _write(path, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for line in lines:
            f.write("\t".join(line) + "\n" if isinstance(line, (list, tuple)) else line + "\n")


MNLI_HEAD = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
             "sentence1_parse", "sentence2_parse", "sentence1", "sentence2"]


def _mnli_row(i, s1, s2, labels):
    return [str(i), "31193", f"{i}n", "government", "( ( x ) )", "( ( y ) )", "(ROOT x)", "(ROOT y)", s1, s2] + labels


@pytest.fixture(scope="module")
def glue_dir(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("glue_data"))
    j = os.path.join
    # CoLA: header-less train/dev (source, label, author's mark, sentence); test has a header.
    _write(j(root, "CoLA", "train.tsv"), [
        ["gj04", "1", "", "Our friends won't buy this analysis, let alone the next one we propose."],
        ["gj04", "1", "", "One more pseudo generalization and I'm giving up."],
        ["gj04", "0", "*", "They drank the pub."],
        ["gj04", "1", ""],                                  # short row
        ["gj04", "2", "", "A label that CoLA does not have."],  # bad label
        ["cj99", "0", "*", "The more you would want, the less you would eat."],
    ])
    _write(j(root, "CoLA", "dev.tsv"), [["gj04", "1", "", "The sailors rode the breeze clear of the rocks."],
                                        ["gj04", "0", "*", "The weights made the rope stretch over the pulley."]])
    _write(j(root, "CoLA", "test.tsv"), [["index", "sentence"], ["0", "Bill whistled past the house."],
                                         ["1", "The car honked its way down the road."]])
    # SST-2: quotes are ordinary characters (GLUE writes no quoting).
    _write(j(root, "SST-2", "train.tsv"), [["sentence", "label"], ['hide new secretions from the parental units ', "0"],
                                           ['"the best" movie of the year', "1"], ["empty label", ""]])
    _write(j(root, "SST-2", "dev.tsv"), [["sentence", "label"], ["it 's a charming and often affecting journey . ", "1"]])
    _write(j(root, "SST-2", "test.tsv"), [["index", "sentence"], ["0", "uneasy mishmash of styles and genres ."]])
    # MRPC: header as download_glue_data.py writes it (with a BOM, as in some copies).
    mrpc_cols = ["#1 ID", "#2 ID", "#1 String", "#2 String"]
    _write(j(root, "MRPC", "train.tsv"), [
        "\ufeff" + "\t".join(["Quality"] + mrpc_cols),
        ["1", "702876", "702977", "Amrozi accused his brother , whom he called \" the witness \" , of deliberately "
         "distorting his evidence .", "Referring to him as only \" the witness \" , Amrozi accused his brother of "
         "deliberately distorting his evidence ."],
        ["0", "2108705", "2108831", "Yucaipa owned Dominick 's before selling the chain to Safeway in 1998 for $ 2.5 "
         "billion .", "Yucaipa bought Dominick 's in 1995 for $ 693 million and sold it to Safeway for $ 1.8 billion "
         "in 1998 ."]])
    _write(j(root, "MRPC", "dev.tsv"), [["Quality"] + mrpc_cols, ["1", "1", "2", "He said hello .", "He greeted us ."],
                                       ["0", "3", "4", "It rained .", "The sun was out ."]])
    _write(j(root, "MRPC", "test.tsv"), [["index"] + mrpc_cols, ["0", "1089874", "1089925", "PCCW 's chief ...",
                                                                 "Current Chief Operating Officer ..."]])
    # STS-B: 10 columns in train/dev, 9 in test.
    sts = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2"]
    _write(j(root, "STS-B", "train.tsv"), [
        sts + ["score"],
        ["0", "main-captions", "MSRvid", "2012test", "0001", "none", "none", "A plane is taking off.",
         "An air plane is taking off.", "5.000"],
        ["1", "main-captions", "MSRvid", "2012test", "0004", "none", "none", "A man is playing a large flute.",
         "A man is playing a flute.", "3.800"],
        ["2", "main-captions", "MSRvid", "2012test", "0005", "none", "none", "A man is slicing.", "A cat naps.",
         "7.5"],  # out of range
        ["3", "main-captions", "MSRvid", "2012test", "0006", "none", "none", "Three men play chess.",
         "Two men play chess.", "abc"],  # not a number
    ])
    _write(j(root, "STS-B", "dev.tsv"), [sts + ["score"], ["0", "main-captions", "MSRvid", "2012test", "0000", "none",
                                                          "none", "A man with a hard hat is dancing.",
                                                          "A man wearing a hard hat is dancing.", "5.000"]])
    _write(j(root, "STS-B", "test.tsv"), [sts, ["0", "main-captions", "MSRvid", "2012test", "0024", "none", "none",
                                                "A girl is styling her hair.", "A girl is brushing her hair."]])
    # QQP: a question with a newline inside breaks its row into two short rows.
    _write(j(root, "QQP", "train.tsv"), [
        ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
        ["133273", "213221", "213222", "How is the life of a math student? Could you describe your own experiences?",
         "Which level of prepration is enough for the exam jlpt5?", "0"],
        ["402555", "536040", "536041", "How do I control my horny emotions?", "How do you control your horniness?",
         "1"],
        ["360472", "364011", "490273", "What causes stool color to change to yellow?"],
        ["What can cause stool to come out as little balls?", "0"],
    ])
    _write(j(root, "QQP", "dev.tsv"), [["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
                                       ["0", "1", "2", "Why are you here?", "What brings you here?", "1"]])
    _write(j(root, "QQP", "test.tsv"), [["id", "question1", "question2"],
                                        ["0", "Why do rockets look white?", "Why are rockets and boosters painted "
                                                                            "white?"]])
    # MNLI: 12 fields in train (label1, gold_label), 16 in dev (label1..label5, gold_label), 10 in test.
    _write(j(root, "MNLI", "train.tsv"), [
        MNLI_HEAD + ["label1", "gold_label"],
        _mnli_row(0, "Conceptually cream skimming has two basic dimensions - product and geography.",
                  "Product and geography are what make cream skimming work. ", ["neutral", "neutral"]),
        _mnli_row(1, "you know during the season and i guess at at your level uh you lose them to the next level",
                  "You lose the things to the following level if the people recall.", ["entailment", "entailment"]),
        _mnli_row(2, "One of our number will carry out your instructions minutely.",
                  "A member of my team will execute your orders with immense precision.",
                  ["contradiction", "contradiction"]),
        _mnli_row(3, "Gays and lesbians.", "Heterosexuals.", ["contradiction", "-"]),  # no gold label
    ])
    dev_head = MNLI_HEAD + ["label1", "label2", "label3", "label4", "label5", "gold_label"]
    _write(j(root, "MNLI", "dev_matched.tsv"), [dev_head, _mnli_row(0, "The new rights are nice enough",
                                                                    "Everyone really likes the newest benefits ",
                                                                    ["neutral"] * 6)])
    _write(j(root, "MNLI", "dev_mismatched.tsv"), [dev_head,
                                                   _mnli_row(0, "Your contribution helped make it possible.",
                                                             "Your contributions were of no help.",
                                                             ["contradiction"] * 6),
                                                   _mnli_row(1, "a", "b", ["entailment"] * 4)])  # 15 fields
    _write(j(root, "MNLI", "test_matched.tsv"), [MNLI_HEAD, _mnli_row(0, "Hierbas, ans seco.", "Hierbas is a name.",
                                                                      [])])
    _write(j(root, "MNLI", "test_mismatched.tsv"), [MNLI_HEAD, _mnli_row(0, "What have you decided?",
                                                                         "What did you decide?", [])])
    _write(j(root, "AX", "AX.tsv"), [["index", "sentence1", "sentence2"],
                                     ["0", "The cat sat on the mat.", "The cat did not sit on the mat."]])
    for task, s in (("QNLI", ["question", "sentence"]), ("RTE", ["sentence1", "sentence2"]),
                    ("WNLI", ["sentence1", "sentence2"])):
        lab = ["0", "1"] if task == "WNLI" else ["entailment", "not_entailment"]
        _write(j(root, task, "train.tsv"), [["index"] + s + ["label"], ["0", "What is X?", "X is Y.", lab[0]],
                                            ["1", "Is Z?", "Z is not.", lab[1]], ["2", "Q?", "A.", "maybe"]])
        _write(j(root, task, "dev.tsv"), [["index"] + s + ["label"], ["0", "What is Q?", "Q is R.", lab[1]]])
        _write(j(root, task, "test.tsv"), [["index"] + s, ["0", "When?", "Now."], ["1", "Who?", "Me."]])
    return root


def test_cola(glue_dir, capsys):
    task = glue.get_task("CoLA", glue_dir)
    train = task.get_examples("train")
    assert [(e.text_a, e.label) for e in train] == [
        ("Our friends won't buy this analysis, let alone the next one we propose.", "1"),
        ("One more pseudo generalization and I'm giving up.", "1"),
        ("They drank the pub.", "0"),
        ("The more you would want, the less you would eat.", "0"),
    ]
    assert train[0].text_b is None
    out = capsys.readouterr()
    assert "cola: read 4 examples from" in out.out and "skipped 2 malformed rows" in out.out
    assert "train.tsv:4: malformed row (3 fields, expected 4)" in out.err
    assert "train.tsv:5: malformed row (label '2' is not one of ['0', '1'])" in out.err
    test = task.get_examples("test")
    assert [(e.index, e.text_a, e.label) for e in test] == [("0", "Bill whistled past the house.", None),
                                                            ("1", "The car honked its way down the road.", None)]
    assert task.labels == ["0", "1"] and task.main_metric == "mcc"
    assert task.eval_splits == {"dev": ""} and task.test_splits == {"test": "CoLA.tsv"}
    assert len(task.get_examples("dev")) == 2
    assert [s.skipped for s in task.stats] == [2, 0, 0]


def test_strict_mode_raises_with_file_and_line(glue_dir):
    with pytest.raises(glue.MalformedRowError, match=r"CoLA/train\.tsv:4: malformed row"):
        glue.get_task("cola", glue_dir, strict=True).get_examples("train")


def test_sst2_quotes_are_literal(glue_dir):
    task = glue.get_task("sst2", glue_dir)
    train = task.get_examples("train")
    assert [(e.text_a, e.label) for e in train] == [("hide new secretions from the parental units", "0"),
                                                    ('"the best" movie of the year', "1")]
    assert task.stats[-1].skipped == 1  # the empty label
    assert task.get_examples("test")[0].index == "0"
    assert task.test_splits == {"test": "SST-2.tsv"}


def test_mrpc(glue_dir):
    task = glue.get_task("mrpc", glue_dir)
    train = task.get_examples("train")
    assert train[0].label == "1" and train[1].label == "0"
    assert train[0].text_a.startswith("Amrozi accused his brother , whom he called \" the witness \"")
    assert train[0].text_b.startswith("Referring to him as only")
    test = task.get_examples("test")
    assert (test[0].index, test[0].text_a, test[0].label) == ("0", "PCCW 's chief ...", None)
    assert task.is_pair and task.main_metric == "f1" and task.test_splits == {"test": "MRPC.tsv"}


def test_stsb(glue_dir):
    task = glue.get_task("STS-B", glue_dir)
    train = task.get_examples("train")
    assert [(e.text_a, e.text_b, e.label) for e in train] == [
        ("A plane is taking off.", "An air plane is taking off.", 5.0),
        ("A man is playing a large flute.", "A man is playing a flute.", 3.8)]
    assert task.stats[-1].skipped == 2
    assert task.is_regression and task.num_classes == 1 and task.labels is None
    assert task.get_examples("test")[0].label is None


def test_qqp_short_rows(glue_dir, capsys):
    task = glue.get_task("qqp", glue_dir)
    train = task.get_examples("train")
    assert [e.index for e in train] == ["133273", "402555"]
    assert [e.label for e in train] == ["0", "1"]
    err = capsys.readouterr().err
    assert "QQP/train.tsv:4: malformed row (4 fields, expected 6)" in err
    assert "QQP/train.tsv:5: malformed row (2 fields, expected 6)" in err
    test = task.get_examples("test")
    assert test[0].text_b == "Why are rockets and boosters painted white?"


def test_mnli(glue_dir):
    task = glue.get_task("mnli", glue_dir)
    train = task.get_examples("train")
    assert [e.label for e in train] == ["neutral", "entailment", "contradiction"]  # "-" gold label skipped
    assert train[0].text_a.startswith("Conceptually cream skimming") and train[0].text_b.startswith("Product and")
    assert task.labels == ["contradiction", "entailment", "neutral"]
    assert task.eval_splits == {"dev_matched": "", "dev_mismatched": "mismatched_"}
    assert task.test_splits == {"test_matched": "MNLI-m.tsv", "test_mismatched": "MNLI-mm.tsv", "ax": "AX.tsv"}
    assert [e.label for e in task.get_examples("dev_matched")] == ["neutral"]
    mm = task.get_examples("dev_mismatched")
    assert [e.label for e in mm] == ["contradiction"] and task.stats[-1].skipped == 1
    assert task.get_examples("test_matched")[0].text_a == "Hierbas, ans seco."
    assert task.get_examples("test_mismatched")[0].label is None
    ax = task.get_examples("ax")
    assert (ax[0].index, ax[0].text_b) == ("0", "The cat did not sit on the mat.")


def test_ax(glue_dir):
    task = glue.get_task("ax", glue_dir)
    assert task.labels == glue.MNLI_LABELS
    assert task.eval_splits == {} and task.test_splits == {"test": "AX.tsv"}
    assert task.get_examples("test")[0].text_a == "The cat sat on the mat."


@pytest.mark.parametrize("name,labels,pair", [("qnli", ["entailment", "not_entailment"], ("What is X?", "X is Y.")),
                                              ("rte", ["entailment", "not_entailment"], ("What is X?", "X is Y.")),
                                              ("wnli", ["0", "1"], ("What is X?", "X is Y."))])
def test_pair_nli_tasks(glue_dir, name, labels, pair):
    task = glue.get_task(name, glue_dir)
    train = task.get_examples("train")
    assert [(e.text_a, e.text_b) for e in train][0] == pair
    assert [e.label for e in train] == labels and task.stats[-1].skipped == 1
    assert len(task.get_examples("test")) == 2 and task.labels == labels


def test_task_dir_given_directly_and_missing_files(glue_dir, tmp_path):
    task = glue.get_task("rte", os.path.join(glue_dir, "RTE"))
    assert len(task.get_examples("dev")) == 1
    with pytest.raises(FileNotFoundError, match="RTE/train.tsv"):
        glue.get_task("rte", str(tmp_path)).get_examples("train")
    with pytest.raises(ValueError, match="unknown task 'squad'"):
        glue.get_task("squad", str(tmp_path))
    _write(str(tmp_path / "SST-2" / "train.tsv"), [["text", "label"], ["x", "1"]])
    with pytest.raises(ValueError, match=r"train\.tsv:1: header \['text', 'label'\] lacks the column\(s\) \['sentence'\]"):
        glue.get_task("sst2", str(tmp_path)).get_examples("train")


def test_custom_tsv(tmp_path, capsys):
    d = str(tmp_path)
    _write(os.path.join(d, "train.tsv"), [["id", "review", "stars"], ["a", "great", "pos"], ["b", "awful", "neg"],
                                          ["c", "meh", "neutral"], ["d", "", "pos"], ["e", "fine"]])
    _write(os.path.join(d, "dev.tsv"), [["id", "review", "stars"], ["f", "nice", "pos"], ["g", "odd", "weird"]])
    _write(os.path.join(d, "test.tsv"), [["id", "review"], ["h", "good"], ["i", "bad"]])
    task = glue.get_task("tsv", d, text_column="review", label_column="stars", index_column="id")
    assert task.labels == ["neg", "neutral", "pos"]  # detected from train, sorted
    assert [(e.text_a, e.label) for e in task.get_examples("train")] == [("great", "pos"), ("awful", "neg"),
                                                                        ("meh", "neutral")]
    err = capsys.readouterr().err
    assert "train.tsv:5: malformed row (empty text)" in err and "train.tsv:6: malformed row (2 fields, expected 3)" in err
    assert [e.label for e in task.get_examples("dev")] == ["pos"]
    test = task.get_examples("test")
    assert [(e.index, e.label) for e in test] == [("h", None), ("i", None)] and not task.split_has_labels("test")
    # Given labels: order kept, unknown labels rejected.
    task = glue.get_task("tsv", d, text_column="review", label_column="stars", labels=["pos", "neg", "neutral"])
    assert task.labels == ["pos", "neg", "neutral"]
    assert [e.index for e in task.get_examples("test")] == ["0", "1"]
    with pytest.raises(ValueError, match=r"no column 'sentence' \(text_column\)"):
        glue.get_task("tsv", d).get_examples("train")


def test_custom_tsv_pairs_regression_and_numeric_labels(tmp_path):
    d = str(tmp_path)
    _write(os.path.join(d, "train.tsv"), [["sentence1", "sentence2", "label"], ["a b", "c d", "0.25"],
                                          ["e", "f", "1"], ["g", "h", "nan"], ["i", "j", "x"]])
    task = glue.get_task("tsv", d, text_column="sentence1", text_b_column="sentence2", regression=True)
    assert [(e.text_a, e.text_b, e.label) for e in task.get_examples("train")] == [("a b", "c d", 0.25),
                                                                                  ("e", "f", 1.0)]
    assert task.stats[-1].skipped == 2 and task.num_classes == 1 and task.main_metric == "pearson"
    _write(os.path.join(d, "train.tsv"), [["sentence", "label"], ["a", "10"], ["b", "2"], ["c", "1"]])
    assert glue.get_task("tsv", d).labels == ["1", "2", "10"]  # integer labels in numeric order
    _write(os.path.join(d, "train.tsv"), [["sentence", "label"], ["a", "1"], ["b", "1"]])
    with pytest.raises(ValueError, match="needs at least 2"):
        glue.get_task("tsv", d).labels


def test_custom_csv_quoting(tmp_path, capsys):
    d = str(tmp_path)
    with open(os.path.join(d, "train.csv"), "w", encoding="utf-8", newline="") as f:
        f.write('sentence,label\n"Hello, world",yes\n"He said ""hi""\nand left",no\n'
                'plain text,no\n"bad "quoting" here",yes\nlast,yes\n')
    task = glue.get_task("csv", d, strict=False)
    train = task.get_examples("train")
    assert [(e.text_a, e.label) for e in train] == [("Hello, world", "yes"), ('He said "hi"\nand left', "no"),
                                                    ("plain text", "no"), ("last", "yes")]
    assert [e.guid.rsplit(":", 1)[1] for e in train] == ["2", "3", "5", "7"]
    assert "train.csv:6: malformed row (bad CSV quoting" in capsys.readouterr().err
    with pytest.raises(glue.MalformedRowError, match=r"train\.csv:6"):
        glue.get_task("csv", d, strict=True).get_examples("train")


def test_bad_utf8_row(tmp_path, capsys):
    d = tmp_path / "SST-2"
    d.mkdir()
    (d / "train.tsv").write_bytes(b"sentence\tlabel\ngood\t1\nbad \xff byte\t0\n")
    assert len(glue.get_task("sst2", str(tmp_path)).get_examples("train")) == 1
    assert "train.tsv:3: malformed row (not valid UTF-8" in capsys.readouterr().err


def test_write_submission(glue_dir, tmp_path):
    task = glue.get_task("mnli", glue_dir)
    ex = task.get_examples("test_matched")
    path = glue.write_submission(str(tmp_path / "MNLI-m.tsv"), ex, [1], task)
    assert open(path).read() == "index\tprediction\n0\tentailment\n"
    sts = glue.get_task("stsb", glue_dir)
    path = glue.write_submission(str(tmp_path / "STS-B.tsv"), sts.get_examples("test"), [5.7], sts)
    assert open(path).read() == "index\tprediction\n0\t5.000\n"
    with pytest.raises(ValueError, match="1 examples but 2 predictions"):
        glue.write_submission(str(tmp_path / "x.tsv"), ex, [0, 1], task)


def test_canonical_names():
    assert [glue.canonical_task_name(n) for n in ("SST-2", "STS-B", "MNLI", "diagnostic", "QNLIv2", "tsv")] == [
        "sst2", "stsb", "mnli", "ax", "qnli", "tsv"]
