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
    original = code_module.normalised
    monkeypatch.setattr(code_module, "normalised", lambda text: calls.append(1) or original(text))
    index = CodeIndex(tmp_path)
    source = locate("ana", "ana", tmp_path, WHERE)
    digests = index.digests(source)
    assert set(digests) == {"ana.py", "helper.py", "pkg/__init__.py", "pkg/tools.py"}
    parsed = len(calls)
    for _ in range(5):  # many analysis nodes sharing the tree: no new parsing
        assert index.digests(source) == digests
    assert len(calls) == parsed == 4


def test_builtin_analyses_include_their_shared_module():
    digests = CodeIndex().digests(locate("builtin.pedestal", "p", None, WHERE))
    assert set(digests) == {"pedestal.py", "common.py"}
