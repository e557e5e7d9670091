"""`raff build --force / --force-acquire / -k` and several targets, end to end on the emulator."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from conftest import assert_clean_error

GOOD = """\
import time


class good:
    def __init__(self, parameters):
        self.parameters = parameters

    def output(self):
        return {"summary": "s.csv", "plots": [], "calibration": None}

    def run(self, data, output_dir):
        with open(output_dir / "s.csv", "w") as f:
            f.write(f"rows,ran_at\\n{len(data)},{time.time_ns()}\\n")
"""

BAD = """\
class bad:
    def __init__(self, parameters):
        self.parameters = parameters

    def output(self):
        return {"summary": "s.csv", "plots": [], "calibration": None}

    def run(self, data, output_dir):
        raise ValueError("this analysis always fails")
"""


def scan(values: list[int]) -> str:
    return f"- key: [roc_s0, Top, 0, phase_strobe]\n  values: {values}\n"


@pytest.fixture
def lib(libdir):
    """daq a (phase_strobe 1, 2, 3) and b (3, 4: one point shared with a); analyses good and bad
    on a, good_b on b."""
    libdir.write("defaults/daq.yaml", "server: {NChips: 3, NEvents: 5, zmqPushPull_port: 8888}\nclient: {}\n")
    libdir.write("analyses/good.py", GOOD)
    libdir.write("analyses/bad.py", BAD)
    analyses = textwrap.dedent("""\
        - {name: bad, type: analysis, daq: a}
        - {name: good, type: analysis, daq: a}
        - {name: good_b, type: analysis, daq: b, module: good}
        """)
    libdir.main(libdir.daq("a", parameters=scan([1, 2, 3])) + libdir.daq("b", parameters=scan([3, 4]))
                + analyses)
    return libdir


def cache_of(lib) -> Path:
    return lib.root / ".raffinerie-cache"


def journal(lib) -> list[dict]:
    path = cache_of(lib) / "journal.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def acquired(lib) -> list[str]:
    return [e["key"] for e in journal(lib) if e["event"] == "acquired"]


def entries(lib, kind: str) -> set[str]:
    from raffinerie.store.store import Store

    return {key for key, _ in Store(cache_of(lib)).entries(kind)}


def ran_at(lib, analysis: str) -> int:
    return int((lib.root / "raff-out" / analysis / "s.csv").read_text().splitlines()[1].split(",")[1])


def test_force_runs_cached_datasets_and_analyses_again(raff, lib):
    main = lib.root / "main.yaml"
    first = raff("build", "good", "-c", main)
    assert first.code == 0, first.err
    before, points = ran_at(lib, "good"), acquired(lib)
    analyses = entries(lib, "analyses")
    assert raff("plan", "good", "-c", main, "--check").code == 0
    preview = raff("plan", "good", "-c", main, "--force", "--check")
    assert preview.code == 2 and "forced (--force)" in preview.out, preview.out

    forced = raff("build", "good", "-c", main, "--force")
    assert forced.code == 0, forced.err
    assert "good: 0 points acquired, 1 dataset and 1 analysis built" in forced.out
    assert "good: analysis started: forced (--force)" in forced.err
    assert ran_at(lib, "good") > before                  # the analysis ran again ...
    assert entries(lib, "analyses") == analyses          # ... and its outputs replaced the cached ones
    assert acquired(lib) == points                       # measurements are not touched

    again = raff("build", "good", "-c", main)
    assert again.code == 0 and "good is up to date" in again.out, again.out + again.err


def test_force_acquire_adds_a_take_and_keeps_the_earlier_one(raff, lib):
    main = lib.root / "main.yaml"
    assert raff("build", "good", "-c", main).code == 0
    first = set(acquired(lib))
    assert len(first) == 3 and entries(lib, "measurements") == first

    preview = json.loads(raff("plan", "a", "-c", main, "--json", "--force-acquire").out)
    assert preview["summary"]["to_acquire"] == 3 and preview["takes"] == {"a": 1}
    assert preview["nodes"][0]["why"]["changes"] == [{"path": "take", "before": 0, "after": 1}]

    result = raff("build", "good", "-c", main, "--force-acquire")
    assert result.code == 0, result.err
    assert "good: 3 points acquired, 1 dataset and 1 analysis built" in result.out
    assert "a: acquiring its 3 points again as take 1; the earlier takes stay in the cache" in result.err
    keys = acquired(lib)
    assert len(keys) == 6 and len(set(keys)) == 6        # the journal names each measurement once
    assert entries(lib, "measurements") == set(keys)     # the first take is still in the cache
    second = set(keys) - first

    plan = json.loads(raff("plan", "good", "-c", main, "--json").out)
    assert plan["takes"] == {"a": 1} and not plan["todo"]
    assert {p["key"] for p in plan["points"]} == second  # the dataset holds the newest take
    dataset = next(n for n in plan["nodes"] if n["id"] == "dataset:a")
    from raffinerie.store.store import Store

    meta = Store(cache_of(lib)).meta("datasets", dataset["key"])
    assert meta["take"] == 1 and set(meta["point_keys"]) == second

    again = raff("build", "good", "-c", main)
    assert again.code == 0 and "good is up to date" in again.out, again.out + again.err
    assert len(acquired(lib)) == 6
    verify = raff("cache", "verify", "-c", main)
    assert verify.code == 0 and "0 damaged" in verify.out, verify.out + verify.err
    gc = raff("cache", "gc", "-c", main, "--include-measurements")   # dry run
    assert gc.code == 0 and "measurement" not in gc.out.replace("measurements are kept", ""), gc.out

    third = raff("build", "a", "-c", main, "--force-acquire")        # take 2: both earlier takes kept
    assert third.code == 0 and "as take 2" in third.err, third.err
    assert len(entries(lib, "measurements")) == 9 and len(set(acquired(lib))) == 9


def test_keep_going_builds_the_independent_siblings_of_a_failure(raff, lib):
    main = lib.root / "main.yaml"
    result = raff("build", "bad", "good", "good_b", "-c", main, "-k", "-w", "1")
    assert_clean_error(result, "1 node failed", "analysis bad:", "this analysis always fails", code=1)
    assert (lib.root / "raff-out" / "good" / "s.csv").is_file()
    assert (lib.root / "raff-out" / "good_b" / "s.csv").is_file()
    assert not (lib.root / "raff-out" / "bad").exists()
    assert "bad, good, good_b: 4 points acquired, 2 datasets and 2 analyses built" in result.out
    plan = json.loads(raff("plan", "bad", "good", "good_b", "-c", main, "--json").out)
    assert [n["id"] for n in plan["nodes"] if n["status"] != "cached"] == ["analysis:bad"]


def test_without_keep_going_the_first_failure_stops(raff, lib):
    main = lib.root / "main.yaml"
    result = raff("build", "bad", "good", "-c", main, "-w", "1")
    assert_clean_error(result, "analysis 'bad' failed in run()", code=1)
    assert "good: analysis started" not in result.err
    assert not (lib.root / "raff-out" / "good").exists()


def test_several_targets_share_one_session_and_their_points(raff, lib):
    main = lib.root / "main.yaml"
    shown = raff("plan", "a", "b", "-c", main)
    assert shown.code == 0, shown.err
    assert "plan for a, b (daq)" in shown.out
    assert "points a  BUILD    3 new points" in shown.out and "points b  BUILD    2 new points" in shown.out
    assert "4 points (1 of them in several procedures, acquired once): 0 cached, 4 to acquire" in shown.out
    doc = json.loads(raff("plan", "a", "b", "-c", main, "--json").out)
    assert doc["procedures"] == ["a", "b"] and doc["kinds"] == {"a": "daq", "b": "daq"}
    assert doc["summary"]["to_acquire"] == 4 and doc["summary"]["shared"] == 1
    dot = raff("plan", "a", "b", "-c", main, "--dot").out
    assert dot.count("digraph") == 1 and dot.count("penwidth") == 2
    assert raff("plan", "a", "b", "-c", main, "--check").code == 2

    built = raff("build", "a", "b", "good_b", "-c", main)
    assert built.code == 0, built.err
    assert "a, b, good_b: 4 points acquired, 2 datasets and 1 analysis built" in built.out
    assert built.err.count("backend: embedded emulator") == 1, built.err   # one session for all
    assert len(acquired(lib)) == 4 and len(set(acquired(lib))) == 4          # the shared point once
    assert raff("plan", "a", "b", "-c", main, "--check").code == 0
    again = raff("build", "b", "a", "-c", main)
    assert again.code == 0 and "b, a are up to date" in again.out


def test_an_unknown_name_among_several_is_one_clear_error(raff, lib):
    main = lib.root / "main.yaml"
    assert_clean_error(raff("build", "a", "nope", "-c", main), "unknown procedure 'nope'", "known: a, b")
    assert_clean_error(raff("plan", "a", "nope", "-c", main), "unknown procedure 'nope'")
    assert not acquired(lib)


def test_force_through_a_calibration_chain(raff, tmp_path):
    from conftest import EXAMPLES

    main, cache, out = EXAMPLES / "main_config.yaml", tmp_path / "cache", tmp_path / "out"
    common = ("-c", main, "--cache", cache)
    assert raff("build", "trimmed_pedestal", *common, "-o", out, "--quiet").code == 0
    plan = json.loads(raff("plan", "trimmed_pedestal", *common, "--json", "--force").out)
    status = {n["id"]: (n["status"], n["why"]["kind"]) for n in plan["nodes"]}
    assert status["analysis:pedestal_trim"] == ("build", "forced")
    assert status["dataset:pedestal_trim_scan"] == ("build", "forced")
    # the calibration may come out different: what uses it waits for it
    assert status["points:trimmed_pedestal_run"] == ("waiting", "waiting_for_calibration")
    forced = raff("build", "trimmed_pedestal", *common, "-o", out, "--force")
    assert forced.code == 0, forced.err
    assert "0 points acquired, 2 datasets and 2 analyses built" in forced.out
    again = raff("build", "trimmed_pedestal", *common, "-o", out)
    assert again.code == 0 and "is up to date" in again.out
