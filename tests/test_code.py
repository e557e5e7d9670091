"""Code digests of analyses: comments and layout do not count, behaviour does."""

from __future__ import annotations

from pathlib import Path

from raffinerie.analysis import code as code_module
from raffinerie.analysis.code import CodeIndex, locate, normalised
from raffinerie.config.library import Origin

WHERE = Origin(Path("lib.yaml"))


def test_comments_docstrings_and_layout_do_not_change_the_digest():
    a = 'def f(x):\n    """Doc."""\n    return x + 1  # add one\n'
    b = "# header\n\ndef f(x):\n\n    return (x\n            + 1)\n"
    c = "def f(x):\n    return x + 2\n"
    assert normalised(a) == normalised(b) != normalised(c)


def test_local_imports_are_followed_and_each_file_is_parsed_once(tmp_path, monkeypatch):
    (tmp_path / "ana.py").write_text("import helper\nfrom pkg import tools\nimport numpy\n")
    (tmp_path / "helper.py").write_text("from pkg.tools import f\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "tools.py").write_text("def f():\n    return 1\n")
    calls = []
    original = code_module._digest_and_imports
    monkeypatch.setattr(code_module, "_digest_and_imports", lambda text: calls.append(1) or original(text))
    monkeypatch.setenv("RAFF_MEMO_DIR", "off")
    index = CodeIndex(tmp_path)
    source = locate("ana", "ana", tmp_path, WHERE)
    digests = index.digests(source)
    assert set(digests) == {"ana.py", "helper.py", "pkg/__init__.py", "pkg/tools.py"}
    parsed = len(calls)
    for _ in range(5):  # many analysis nodes sharing the tree: no new parsing
        assert index.digests(source) == digests
    assert len(calls) == parsed == 4
    # with the memo, the next build parses nothing; a changed file is parsed again, and only it
    monkeypatch.setenv("RAFF_MEMO_DIR", str(tmp_path / "memo"))
    assert CodeIndex(tmp_path).digests(source) == digests and len(calls) == 8
    assert CodeIndex(tmp_path).digests(source) == digests and len(calls) == 8
    (tmp_path / "helper.py").write_text("from pkg.tools import f\nx = 2\n")
    changed = CodeIndex(tmp_path).digests(source)
    assert len(calls) == 9 and {k for k in digests if changed[k] != digests[k]} == {"helper.py"}


def test_builtin_analyses_include_their_shared_module():
    digests = CodeIndex().digests(locate("builtin.pedestal", "p", None, WHERE))
    local = {name for name in digests if not name.startswith("raffinerie/")}
    assert local == {"pedestal.py", "common.py"}
    # and the raffinerie modules it draws and judges with: a new hexmap redraws its plots
    drawn_with = {"raffinerie/analysis/hexmap.py", "raffinerie/qc.py", "raffinerie/geometry/__init__.py"}
    assert drawn_with <= set(digests)


SAMPLE = '''"""Module doc."""
import numpy as np  # comment


class gain:
    """Class doc."""
    def __init__(self, p):
        \'\'\'doc\'\'\'
        self.p = p
        x = f"{p!r:>10} and {f'{p}'}" ; y = 1

    def run(self, data, out):
        return [v * 2 for v in data if v > 0]
'''


def test_code_digest_is_a_fixed_value():
    """Golden value: a change here reruns every analysis of every user; make it on purpose only."""
    import hashlib

    assert hashlib.sha256(normalised(SAMPLE).encode()).hexdigest()[:16] == "75328bdc0cf33445"


def test_code_digests_are_the_same_in_other_python_versions(tmp_path):
    """The same digests under every Python 3.11+ on this machine (others are skipped)."""
    import shutil
    import subprocess

    from conftest import ROOT

    (tmp_path / "sample.py").write_text(SAMPLE)
    script = ("import hashlib, sys; sys.path.insert(0, sys.argv[1]); "
              "from raffinerie.analysis.code import normalised; "
              "[print(hashlib.sha256(normalised(open(f).read()).encode()).hexdigest()) for f in sys.argv[2:]]")
    files = [tmp_path / "sample.py"] + sorted((ROOT / "raffinerie" / "analysis" / "builtin").glob("*.py"))
    here = [__import__("hashlib").sha256(normalised(f.read_text()).encode()).hexdigest() for f in files]
    candidates = {shutil.which(f"python3.{minor}") for minor in range(11, 16)}
    candidates |= {str(p) for p in Path("/root/.pyenv/versions").glob("3.1[1-9]*/bin/python")}
    ran = 0
    for python in sorted(c for c in candidates if c):
        probe = subprocess.run([python, "-c", "import sys; print(sys.version_info >= (3, 11))"],
                               capture_output=True, text=True)
        if probe.returncode or probe.stdout.strip() != "True":
            continue
        # one interpreter for every file (one each cost 80 processes, 13 s of a worker)
        digests = subprocess.run([python, "-c", script, str(ROOT), *map(str, files)], capture_output=True,
                                 text=True, check=True).stdout.split()
        assert digests == here, python
        ran += 1
    if ran < 2:
        import pytest
        pytest.skip("no second Python 3.11+ interpreter on this machine")
