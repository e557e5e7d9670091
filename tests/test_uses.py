"""`uses:`: an analysis that reads other analyses' summaries beside its dataset.

`counter` is a user distillery (the Datenraffinerie interface) that writes, per used analysis,
how many rows its summary has: what the runner handed it as `upstream`. The used analyses are
`pedestal` runs (builtin.pedestal) of two small scans.
"""

from __future__ import annotations

import json

from conftest import assert_clean_error

COUNTER = '''\
import os

import pandas as pd


class counter:
    def __init__(self, parameters):
        self.parameters = parameters

    def output(self):
        return {"summary": "summary.csv", "plots": [], "calibration": None}

    def run(self, data, output_dir):
        rows = [(name, -1 if table is None else len(table)) for name, table in sorted(self.upstream.items())]
        pd.DataFrame(rows, columns=["used", "rows"]).to_csv(os.path.join(output_dir, "summary.csv"), index=False)
'''


def _library(libdir, uses: str = "[ped_a, ped_b]", noise: float = 3.0) -> object:
    libdir.write("defaults/daq.yaml", "server: {NChips: 3, NEvents: 20, zmqPushPull_port: 8888}\nclient: {}\n")
    libdir.write("analyses/counter.py", COUNTER)
    return libdir.main(libdir.daq("run_a") + libdir.daq("run_b")
                       + "- {name: ped_a, type: analysis, daq: run_a, module: builtin.pedestal,"
                       f" parameters: {{noisy_threshold: {noise}}}}}\n"
                       "- {name: ped_b, type: analysis, daq: run_b, module: builtin.pedestal}\n"
                       f"- {{name: both, type: analysis, daq: run_a, module: counter, uses: {uses}}}\n")


def _rows(libdir) -> dict:
    import pandas as pd

    table = pd.read_csv(libdir.root / "raff-out" / "both" / "summary.csv")
    return dict(zip(table.used, table.rows))


def test_an_analysis_reads_the_summaries_of_the_analyses_it_uses(raff, libdir, tmp_path):
    main, cache = _library(libdir), tmp_path / "cache"
    r = raff("build", "both", "-c", main, "--cache", cache, timeout=180)
    assert r.code == 0, r.err
    assert _rows(libdir) == {"ped_a": 234, "ped_b": 234}    # 3 chips x 78 rows of builtin.pedestal
    record = json.loads((cache / "names" / "analyses" / "both.json").read_text())
    assert set(record["inputs"]["uses"]) == {"ped_a", "ped_b"}
    assert "is up to date" in raff("build", "both", "-c", main, "--cache", cache).out


def test_a_change_of_a_used_analysis_reruns_its_user_and_the_plan_names_it(raff, libdir, tmp_path):
    main, cache = _library(libdir), tmp_path / "cache"
    assert raff("build", "both", "-c", main, "--cache", cache, timeout=180).code == 0
    main = _library(libdir, noise=4.0)
    plan = json.loads(raff("plan", "both", "-c", main, "--cache", cache, "--json").out)
    nodes = {n["id"]: n for n in plan["nodes"]}
    assert nodes["analysis:ped_a"]["status"] == "build" and nodes["analysis:ped_b"]["status"] == "cached"
    assert nodes["analysis:both"]["why"] == {"kind": "used_changed", "used": ["ped_a"]}
    assert "used analysis changed (ped_a)" in raff("plan", "both", "-c", main, "--cache", cache).out


def test_an_analysis_that_uses_none_keeps_its_key(libdir):
    from raffinerie.config.library import AnalysisProcedure
    from raffinerie.graph.keying import analysis_inputs, analysis_key

    proc = AnalysisProcedure("p", None, "scan", "builtin.pedestal")
    assert analysis_inputs(proc, "ab" * 32) == analysis_inputs(proc, "ab" * 32, None, {})
    assert analysis_key(analysis_inputs(proc, "ab" * 32, None, {"x": "cd" * 32})) != \
        analysis_key(analysis_inputs(proc, "ab" * 32))


def test_validate_names_a_used_name_that_is_unknown_or_a_daq_procedure(raff, libdir):
    main = _library(libdir, uses="[ped_c]")
    r = raff("validate", "-c", main)
    assert_clean_error(r)
    assert "analysis 'both' uses unknown analysis 'ped_c'" in r.out and "did you mean" in r.out, r.out
    assert "main.yaml:" in r.out and "uses[0]" in r.out, r.out
    r = raff("validate", "-c", _library(libdir, uses="[run_b]"))
    assert_clean_error(r)
    assert "'run_b' is a daq procedure, not an analysis" in r.out, r.out


def test_a_cycle_through_uses_is_an_error(raff, libdir):
    main = _library(libdir, uses="[ped_a, both]")
    r = raff("plan", "both", "-c", main)
    assert_clean_error(r)
    assert "dependency cycle: both -> both" in r.err, r.err


def test_a_damaged_used_summary_is_never_read(raff, libdir, tmp_path):
    main, cache = _library(libdir), tmp_path / "cache"
    assert raff("build", "ped_a", "ped_b", "-c", main, "--cache", cache, timeout=180).code == 0
    key = json.loads((cache / "names" / "analyses" / "ped_b.json").read_text())["key"]
    summary = cache / "analyses" / key[:2] / key / "summary.csv"
    summary.write_text(summary.read_text().replace("ok", "no", 1))    # same size, other bytes
    r = raff("build", "both", "-c", main, "--cache", cache, timeout=180)
    assert_clean_error(r)
    assert "analysis 'both' uses 'ped_b', whose cache entry is damaged" in r.err, r.err
    assert not summary.exists() and any((cache / "quarantine").rglob("summary.csv"))
    r = raff("build", "both", "-c", main, "--cache", cache, timeout=180)   # ped_b made again
    assert r.code == 0, r.err
    assert _rows(libdir) == {"ped_a": 234, "ped_b": 234}


def test_a_shared_cache_selection_follows_what_an_analysis_used():
    from raffinerie.store.selection import select

    records = {("analyses", "both"): {"key": "b" * 64}, ("analyses", "ped_a"): {"key": "a" * 64}}
    metas = {("analyses", "b" * 64): {"procedure": "both", "inputs": {"uses": {"ped_a": "a" * 64}}},
             ("analyses", "a" * 64): {"procedure": "ped_a", "inputs": {}}}
    chosen = select(["both"], lambda kind, name: records.get((kind, name)),
                    lambda kind, key: metas.get((kind, key)))
    assert set(chosen.keys["analyses"]) == {"a" * 64, "b" * 64}
    assert ("analyses", "ped_a") in chosen.records
