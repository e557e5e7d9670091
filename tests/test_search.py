"""Search parameters (issue 26): the bisection itself against known curves, and searches built
on the real emulator: a rebuild acquires nothing, a kill -9 at random moments loses no probe
and acquires none twice, a crossing outside the bounds is named, a bad `search:` is a clean error."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from conftest import EXAMPLES, assert_clean_error, damage_member, run_raff, summary_files

from raffinerie.config.search import Direction, SearchMode, SearchSpec
from raffinerie.graph.search import Cell, CellStatus, Level, unfold

# --- the bisection, on curves whose crossing is known -----------------------------------------

VALUES = list(range(64))


def _replay(spec, crossings, noise=0.0, n_events=1000, outer=()):
    """Unfold a search over VALUES for one chip of channels whose efficiency steps from 0 to 1 at
    `crossings` (value index; a probe at or above it reads 1), with binomial error `noise` near it."""
    cells = [Cell(("roc_s0", "ch", c, "trim_toa"), 0, Level.CHANNEL, 0, c) for c in range(len(crossings))]
    table = {}

    def keys_of(probes):
        out = []
        for p in probes:
            key = repr((p.outer, p.indices)).encode()
            shift = sum(p.outer) * 10      # each outer coordinate moves every crossing by 10 values
            eff = np.array([1.0 if i >= x + shift else 0.0 for i, x in zip(p.indices, crossings)])
            if noise:   # a probe one below its crossing reads 0.5 +- noise: within the noise of the target
                eff = np.where([i == x - 1 for i, x in zip(p.indices, crossings)], 0.5, eff)
            n = len(crossings)
            table[key] = {"toa_efficiency": eff, "toa_efficiency_error": np.full(n, noise),
                          "chip": np.zeros(n), "half": np.zeros(n), "channel": np.arange(n),
                          "channeltype": np.zeros(n), "n_events": np.full(n, n_events)}
            out.append(key)
        return out

    class Everything:
        def __contains__(self, key):
            return True

    return unfold(spec, VALUES, cells, list(outer), keys_of, Everything(), table.get)


def test_bisection_brackets_every_channel_at_its_own_crossing_in_log2_rounds():
    crossings = [1, 5, 17, 31, 32, 47, 62, 63]
    progress = _replay(SearchSpec("toa_efficiency", 0.5), crossings)
    assert progress.done and not progress.flagged()
    for c, x in enumerate(crossings):
        assert progress.result((), c) == (x - 1, x)
    assert len(progress.measured) <= 7   # ceil(log2(64)) + 1


def test_each_coordinate_of_the_other_axes_has_a_search_of_its_own():
    progress = _replay(SearchSpec("toa_efficiency", 0.5), [5, 20], outer=(3,))
    assert progress.done and not progress.flagged()
    for o in range(3):
        assert [progress.result((o,), c) for c in (0, 1)] == [(4 + 10 * o, 5 + 10 * o), (19 + 10 * o, 20 + 10 * o)]
    assert {p.outer for p in progress.measured} == {(0,), (1,), (2,)}


def test_a_crossing_outside_the_bounds_is_flagged_and_the_search_ends():
    progress = _replay(SearchSpec("toa_efficiency", 0.5), [0, 64, 30])
    status = {cell.index: s for _, cell, s in progress.flagged()}
    assert status == {0: CellStatus.PAST_AT_LOWEST, 1: CellStatus.SHORT_AT_HIGHEST}
    assert progress.done and progress.result((), 2) == (29, 30)
    assert len(progress.measured) <= 8


def test_a_probe_within_its_noise_of_the_target_never_closes_a_bracket():
    # the probe just below each crossing reads 0.5 +- 0.02: undecided, so both of its sides are
    # probed; the bracket is the first decided probes around it, never the undecided one
    progress = _replay(SearchSpec("toa_efficiency", 0.5), [20, 40], noise=0.02)
    assert progress.done and not progress.flagged()
    assert progress.result((), 0) == (18, 20) and progress.result((), 1) == (38, 40)


def test_a_falling_measure_and_refine_mode_sample_around_the_crossing():
    spec = SearchSpec("toa_efficiency", 0.5, Direction.FALLING)
    # rising data read as falling: 1 at value 31 is short of falling to 0.5, so the search goes up,
    # and never gets there
    progress = _replay(spec, [10])
    assert [s for _, _, s in progress.flagged()] == [CellStatus.SHORT_AT_HIGHEST]
    refine = _replay(SearchSpec("toa_efficiency", 0.5, mode=SearchMode.REFINE, around=3), [30])
    probed = {p.indices[0] for p in refine.measured}
    assert set(range(26, 33)) <= probed and refine.result((), 0) == (29, 30)


# --- searches built on the emulator -------------------------------------------------------------

def _toa_trim_search(root, extra=""):
    """The example library plus `toa_trim_search`: the chain's trim_toa search on the untuned start
    config (no calibrations), and its analysis."""
    # not the cache or outputs of a build of the examples (the README's main job makes them there)
    shutil.copytree(EXAMPLES, root, ignore=shutil.ignore_patterns(".raffinerie-cache", "raff-out"))
    text = (root / "tuning_search_procedures.yaml").read_text()
    block = re.search(r"^- name: tuning_toa_trim_scan\n.*?(?=^# TOT threshold)", text, re.M | re.S).group(0)
    block = block.replace("tuning_toa_trim_scan", "toa_trim_search")
    block = re.sub(r"^  calibration: .*\n", "", block, flags=re.M)
    (root / "search.yaml").write_text(block + extra + "\n- name: toa_trim_of_search\n  type: analysis\n"
                                      "  daq: toa_trim_search\n  module: builtin.toa_trim\n")
    main = root / "main_config.yaml"
    doc = yaml.safe_load(main.read_text())
    doc["libraries"] = ["./daq_procedures.yaml", "./analysis_procedures.yaml", "./search.yaml"]
    doc.pop("workflows", None)
    main.write_text(yaml.safe_dump(doc))
    return main


def _acquired(main) -> list[str]:
    journal = main.parent / ".raffinerie-cache" / "journal.jsonl"
    if not journal.exists():
        return []
    events = [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]
    return [e["key"] for e in events if e.get("event") == "acquired"]


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    main = _toa_trim_search(tmp_path_factory.mktemp("search") / "lib")
    r = run_raff("build", "toa_trim_of_search", "-c", main, timeout=300)
    assert r.code == 0, r.err
    return main, r


def test_a_search_builds_its_probes_and_a_rebuild_acquires_nothing(searched, raff):
    main, first = searched
    plan = json.loads(raff("plan", "toa_trim_of_search", "-c", main, "--json").out)
    search = plan["searches"]["toa_trim_search"]
    assert search["done"] and search["next"] == 0 and 6 <= search["measured"] <= 16, search
    assert len(_acquired(main)) == search["measured"]
    text = raff("plan", "toa_trim_search", "-c", main).out
    assert f"search: {search['measured']} probes measured, done" in text, text
    assert "search over range(0, 64): 64 values (refine, toa_efficiency rising to 0.5" in text, text
    again = raff("build", "toa_trim_of_search", "-c", main)
    assert again.code == 0 and "is up to date" in again.out, again.out + again.err
    assert len(_acquired(main)) == search["measured"]
    summary = (main.parent / "raff-out" / "toa_trim_of_search" / "summary.csv").read_text()
    # on the untuned start config (Toa_vref not tuned) a third of the crossings lie beyond trim 63
    assert summary.count(",trimmed,") >= 120


def test_a_damaged_probe_is_never_read_the_search_measures_it_again(searched, tmp_path, raff):
    reference, _ = searched
    main = tmp_path / "lib" / "main_config.yaml"
    shutil.copytree(reference.parent, main.parent)
    probe = summary_files(main.parent / ".raffinerie-cache")[0]
    damage_member(probe)
    plan = json.loads(raff("plan", "toa_trim_search", "-c", main, "--json").out)
    search = plan["searches"]["toa_trim_search"]
    assert not search["done"] and search["next"] >= 1, search      # the round it was in, to measure again
    r = raff("build", "toa_trim_of_search", "-c", main)
    assert r.code == 0, r.err
    assert "quarantine" in (r.out + r.err) or (main.parent / ".raffinerie-cache" / "quarantine").is_dir()
    assert probe.is_file()                                           # measured again, intact
    again = json.loads(raff("plan", "toa_trim_search", "-c", main, "--json").out)["searches"]["toa_trim_search"]
    assert again["done"] and again["measured"] == json.loads(raff("plan", "toa_trim_search", "-c", reference,
                                                                  "--json").out)["searches"]["toa_trim_search"]["measured"]
    result = (main.parent / "raff-out" / "toa_trim_of_search" / "summary.csv").read_text()
    assert result == (reference.parent / "raff-out" / "toa_trim_of_search" / "summary.csv").read_text()


def test_a_search_killed_at_random_moments_resumes_without_acquiring_a_probe_twice(searched, tmp_path):
    reference, _ = searched
    main = _toa_trim_search(tmp_path / "lib")
    rng = random.Random(26)
    env = {k: v for k, v in os.environ.items() if k not in ("RAFF_CACHE", "RAFF_CONFIG")}
    for _ in range(3):
        p = subprocess.Popen([sys.executable, "-m", "raffinerie", "build", "toa_trim_search", "-c", str(main)],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(rng.uniform(1.0, 4.0))
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    r = run_raff("build", "toa_trim_of_search", "-c", main, timeout=300)
    assert r.code == 0, r.err
    keys = _acquired(main)
    assert len(keys) == len(set(keys)), "a probe was acquired twice"
    assert set(keys) == set(_acquired(reference))   # the same probes as a search never interrupted
    result = (main.parent / "raff-out" / "toa_trim_of_search" / "summary.csv").read_text()
    assert result == (reference.parent / "raff-out" / "toa_trim_of_search" / "summary.csv").read_text()


def test_a_crossing_outside_the_bounds_names_the_channel_and_the_search_ends(tmp_path):
    from raffinerie.config.daqconfig import Generation
    from raffinerie.emulator.process import EmulatorProcess

    main = _toa_trim_search(tmp_path / "lib")
    with EmulatorProcess(seed=4, generation=Generation.Y2021, extra_args=["--untunable-channel", "1:40"]) as emu:
        p = emu.ports
        net = tmp_path / "board.yaml"
        sockets = {k: {"hostname": "127.0.0.1", "port": p[k]} for k in ("server", "target", "data")}
        net.write_text(yaml.safe_dump(sockets | {"board": "untunable", "timeout": 10}))
        r = run_raff("build", "toa_trim_search", "-c", main, "--network", net, timeout=300)
        plan = json.loads(run_raff("plan", "toa_trim_search", "-c", main, "--network", net, "--json").out)
    assert r.code == 0, r.err
    assert re.search(r"toa_trim_search: warning: roc_s1 ch 40: short of the target still at the highest "
                     r"value \(toa_efficiency → 0.5 over trim_toa 0..63", r.out + r.err), r.out + r.err
    flagged = plan["searches"]["toa_trim_search"]["flagged"]
    assert {"cell": "roc_s1 ch 40", "status": "short of the target still at the highest value"} in flagged
    assert plan["searches"]["toa_trim_search"]["done"]


@pytest.mark.parametrize("search, message", [
    ("{measure: toa_efficiency}", "procedure 'toa_trim_search': parameters[0].search: missing required field 'target'"),
    ("{measure: toa_efficiency, target: 0.5, direction: up}", "procedure 'toa_trim_search': parameters[0].search.direction: "),
])
def test_a_bad_search_is_one_clean_error_naming_the_place(tmp_path, raff, search, message):
    main = _toa_trim_search(tmp_path / "lib")
    lib = main.parent / "search.yaml"
    text = lib.read_text()
    lib.write_text(re.sub(r"search: \{measure: toa_efficiency[^}]*\}", f"search: {search}", text))
    assert_clean_error(raff("validate", "-c", main), "search.yaml:", message)


def test_a_search_over_values_that_are_not_register_values_is_refused(tmp_path, raff):
    main = _toa_trim_search(tmp_path / "lib")
    lib = main.parent / "search.yaml"
    lib.write_text(lib.read_text().replace("range: {start: 0, stop: 64}", "values: [0.5, 1.5]"))
    assert_clean_error(raff("validate", "-c", main), "search.yaml:",
                       "a search looks for a register value: its values must be whole numbers")


def test_a_search_over_a_place_that_is_no_chip_register_is_refused_by_validate_and_plan(tmp_path, raff):
    main = _toa_trim_search(tmp_path / "lib")
    lib = main.parent / "search.yaml"
    text = lib.read_text()
    lib.write_text(re.sub(r"key: \[\[roc_s0, roc_s1, roc_s2\], ch, \[[0-9, ]*\], trim_toa\]",
                          "key: [daq, server, NEvents]", text))
    want = ("search.yaml:", "procedure 'toa_trim_search': parameters[0].key: a search sets chip registers "
            "(roc_sN, block, index, register); not daq.server.NEvents")
    assert_clean_error(raff("validate", "-c", main), *want)
    assert_clean_error(raff("plan", "toa_trim_search", "-c", main), *want)
