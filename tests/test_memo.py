"""The memo of large YAML documents: the same documents as without it, never a damaged one."""

from __future__ import annotations

import datetime

import pytest

from conftest import EXAMPLES
from raffinerie import memo
from raffinerie.config.yamlio import parse_yaml
from raffinerie.errors import RaffError

POD = EXAMPLES / "defaults" / "V3LDHexaboard-poweron-default.yaml"


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("RAFF_MEMO_DIR", str(tmp_path / "memo"))
    return tmp_path / "memo"


def kept(folder):
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


class Counting:
    def __init__(self, value):
        self.value, self.calls = value, 0

    def __call__(self):
        self.calls += 1
        return self.value() if callable(self.value) else self.value


BIG = "x" * memo.MIN_CHARS


def test_a_parsed_document_is_kept_and_given_back_fresh(folder):
    parse = Counting(lambda: {"a": [1, 1.0, True, "1"], "big": BIG})
    first = memo.parsed("t", BIG, parse)
    first["a"].append("changed by the caller")
    again = memo.parsed("t", BIG, parse)
    assert parse.calls == 1 and again == {"a": [1, 1.0, True, "1"], "big": BIG}
    assert [type(v) for v in again["a"]] == [int, float, bool, str]
    assert len(kept(folder)) == 1
    assert memo.parsed("other step", BIG, parse) and parse.calls == 2   # the step is part of the key


def test_small_documents_are_parsed_each_time_and_not_kept(folder):
    parse = Counting({"a": 1})
    memo.parsed("t", "a: 1", parse)
    memo.parsed("t", "a: 1", parse)
    assert parse.calls == 2 and not kept(folder)


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty"])
def test_a_damaged_memo_file_is_never_used(folder, damage):
    parse = Counting(lambda: {"value": 1, "big": BIG})
    memo.parsed("t", BIG, parse)
    (file,) = kept(folder)
    blob = bytearray(file.read_bytes())
    if damage == "flip":
        blob[-3] ^= 0x10
    damaged = {"truncate": blob[:len(blob) // 2], "empty": b"", "flip": blob}[damage]
    file.write_bytes(bytes(damaged))
    assert memo.parsed("t", BIG, parse) == {"value": 1, "big": BIG} and parse.calls == 2
    assert memo.parsed("t", BIG, parse) == {"value": 1, "big": BIG} and parse.calls == 2  # sound again


def test_off_and_unwritable_folders_only_cost_time(tmp_path, monkeypatch):
    monkeypatch.setenv("RAFF_MEMO_DIR", "off")
    parse = Counting({"a": BIG})
    assert memo.parsed("t", BIG, parse) == memo.parsed("t", BIG, parse) and parse.calls == 2
    blocker = tmp_path / "a file"
    blocker.write_text("")
    monkeypatch.setenv("RAFF_MEMO_DIR", str(blocker / "memo"))
    assert memo.parsed("t", BIG, parse) == {"a": BIG} and parse.calls == 3


def test_documents_marshal_cannot_hold_are_not_kept(folder):
    parse = Counting(lambda: {"when": datetime.date(2026, 12, 3), "big": BIG})
    assert memo.parsed("t", BIG, parse)["when"] == datetime.date(2026, 12, 3)
    assert memo.parsed("t", BIG, parse) and parse.calls == 2 and not kept(folder)


def test_the_power_on_default_is_the_same_document_with_and_without_the_memo(folder, monkeypatch):
    text = POD.read_text()
    kept_doc = parse_yaml(text, POD)
    from_memo = parse_yaml(text, POD)
    monkeypatch.setenv("RAFF_MEMO_DIR", "off")
    plain = parse_yaml(text, POD)
    assert repr(from_memo) == repr(kept_doc) == repr(plain)
    assert len(kept(folder)) == 1


def test_errors_are_never_kept(folder, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"# {BIG}\na: 1\na: 2\n")
    for _ in range(2):
        with pytest.raises(RaffError, match="given twice"):
            parse_yaml(bad.read_text(), bad)
    assert not kept(folder)


def test_a_dumped_document_is_the_text_of_the_plain_dump(folder, monkeypatch):
    from raffinerie.daq.daqcontrol import dump

    doc = {"roc_s0": {"ch": {i: {"trim_inv": i % 64, "big": BIG[:300]} for i in range(72)}}}
    plain = dump(doc)
    assert dump(doc) == plain and len(kept(folder)) == 1
    other = {"roc_s0": {"ch": {i: {"trim_inv": float(i % 64), "big": BIG[:300]} for i in range(72)}}}
    assert dump(other) != plain          # 1 and 1.0 are different documents
    monkeypatch.setenv("RAFF_MEMO_DIR", "off")
    assert dump(doc) == plain


def test_the_folder_is_trimmed_to_the_files_used_last(folder, monkeypatch):
    import os

    monkeypatch.setattr(memo, "MAX_FILES", 6)
    monkeypatch.setattr(memo, "KEEP_FILES", 4)
    monkeypatch.setattr(memo, "TRIM_CHANCE", 1.0)
    texts = [f"{i}{BIG}" for i in range(6)]
    for age, text in enumerate(texts):   # six files, text 0 the least recently used
        memo.parsed("t", text, lambda: text)
        key = memo._key("parse:t", text.encode())
        os.utime(folder / key[:2] / key, (1000 + age, 1000 + age))
    parse = Counting(lambda: texts[0])
    memo.parsed("t", texts[0], parse)            # used again: now the most recent
    assert parse.calls == 0 and len(kept(folder)) == 6
    stale, fresh = folder / "00" / ".tmp-raff-memo-killed", folder / "00" / ".tmp-raff-memo-writing"
    for tmp in (stale, fresh):
        tmp.parent.mkdir(exist_ok=True)
        tmp.write_bytes(b"half a write")
    os.utime(stale, (1000, 1000))
    memo.parsed("t", "new" + BIG, lambda: "new")  # a seventh: trimmed to four
    assert not stale.exists() and fresh.exists()   # a killed write's file goes, one being written stays
    assert len([p for p in kept(folder) if not p.name.startswith(".tmp-raff-memo-")]) == 4
    for text, calls in ((texts[0], 0), ("new" + BIG, 0), (texts[5], 0), (texts[1], 1)):
        parse = Counting(lambda: text)
        memo.parsed("t", text, parse)
        assert parse.calls == calls, text[:2]


def test_a_schema_check_is_remembered_only_for_a_document_valid_as_it_is(folder, tmp_path, monkeypatch):
    from raffinerie.config import schema

    calls = []
    original = schema._validator
    monkeypatch.setattr(schema, "_validator", lambda name: calls.append(name) or original(name))
    file = tmp_path / "network.yaml"
    good = {"server": {"hostname": "localhost", "port": 6000},
            "target": {"hostname": "localhost", "port": 5555}, "board": "LD-0042"}
    assert schema.check(dict(good), "network", file) == [] and len(calls) == 1
    assert schema.check(dict(good), "network", file) == [] and len(calls) == 1     # remembered
    # "6000" is taken as meant (an integer) and so changes the document: checked every time
    meant = {**good, "server": {"hostname": "localhost", "port": "6000"}}
    for n in (2, 3):
        doc = {**meant, "server": dict(meant["server"])}
        assert schema.check(doc, "network", file) == [] and doc["server"]["port"] == 6000
        assert len(calls) == n
    # an invalid document is reported every time, never remembered
    bad = {**good, "server": {"hostname": "localhost", "port": "six thousand"}}
    for n in (4, 5):
        assert schema.check({**bad}, "network", file) and len(calls) == n
    # another schema digest (a schema or this code changed): checked again
    monkeypatch.setattr(schema, "_schemas_digest", lambda: "changed")
    assert schema.check(dict(good), "network", file) == [] and len(calls) == 6


def test_trimming_touches_nothing_but_memo_files(folder, monkeypatch):
    """RAFF_MEMO_DIR may be a folder with other things in it: they stay, whatever their names."""
    import os

    monkeypatch.setattr(memo, "MAX_FILES", 2)
    monkeypatch.setattr(memo, "KEEP_FILES", 1)
    monkeypatch.setattr(memo, "TRIM_CHANCE", 1.0)
    theirs = [folder / "db" / f"notes{i}.txt" for i in range(5)] + [folder / "ab" / ".tmp-theirs"]
    theirs.append(folder / "ab" / ("0" * 64))   # a memo-like name in a folder it does not belong to
    for path in theirs:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("mine")
        os.utime(path, (1000, 1000))
    for i in range(4):
        memo.parsed("t", f"{i}{BIG}", lambda: i)
    assert all(path.exists() for path in theirs)
    assert len([p for p in kept(folder) if p not in theirs]) <= 2


def test_documents_a_dump_could_tell_apart_are_never_confused(folder):
    """Shared objects (YAML anchors), foreign scalar types and ints repr refuses: not kept."""
    import numpy as np

    from raffinerie.daq.daqcontrol import dump

    block = {f"reg{i}": i for i in range(2000)}
    shared = {"roc_s0": block, "roc_s1": block}
    plain = {"roc_s0": dict(block), "roc_s1": dict(block)}
    assert "&id" in dump(shared) and not kept(folder)          # shared objects: not kept
    assert "&id" not in dump(plain) and len(kept(folder)) == 1
    assert "&id" in dump(shared) and "&id" not in dump(plain)   # the kept plain text never answers it
    with_numpy = {"roc_s0": {**block, "reg0": np.int64(0)}}
    with pytest.raises(Exception):
        dump(with_numpy)   # what the plain dumper says of a numpy scalar, memo or not
    huge = {"roc_s0": {**block, "reg0": int("f" * 4000, 16)}}
    for _ in range(2):   # not kept: the dumper refuses it each time, as without the memo
        with pytest.raises(ValueError, match="4300 digits"):
            dump(huge)


def test_a_huge_integer_in_a_library_is_checked_not_a_crash(folder, tmp_path):
    from raffinerie.config import schema

    doc = [{"name": "a", "type": "daq", "daq_settings": {"server_override": {"big": int("f" * 4000, 16)}}}]
    assert isinstance(schema.check(doc, "library", tmp_path / "lib.yaml"), list)
