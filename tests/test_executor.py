"""The executor plans once: readiness is a countdown, and only what a finished node changes is
planned again (issue 24). A real build on the embedded emulator, with a real analysis worker."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from common import scan_library  # noqa: E402

from raffinerie.analysis.runner import AnalysisRunner  # noqa: E402
from raffinerie.builder.executor import Builder  # noqa: E402
from raffinerie.builder.progress import Progress  # noqa: E402
from raffinerie.config.library import load_library  # noqa: E402
from raffinerie.config.resolve import ConfigFiles  # noqa: E402
from raffinerie.graph.nodes import NodeKind  # noqa: E402
from raffinerie.store.store import Store  # noqa: E402

ANALYSIS = "  - {name: gain, type: analysis, daq: scan, module: builtin.injection, parameters: {saturation_adc: 1000}}\n"


def _build(main: Path, name: str):
    lib, files = load_library(main), ConfigFiles()
    store = Store(main.parent / ".raffinerie-cache")
    runner = AnalysisRunner(lib, store, lambda proc: main.parent / "raff-out" / proc, None)
    builder = Builder(lib, files, store, Progress(quiet=True), runner=runner)
    report = builder.build(name, signals=False)
    return builder, report


def test_a_build_hashes_its_points_once_and_plans_again_only_after_acquiring(tmp_path):
    main = scan_library(tmp_path, 24, 2)
    main.write_text(main.read_text() + ANALYSIS)
    builder, report = _build(main, "gain")
    assert report.acquired == 24 and report.datasets == 1 and report.analyses == 1
    # one plan, and its dataset and analysis once more after the points were acquired; never re-hashed
    assert report.plans == 2
    assert report.points_hashed == 24
    assert not builder.final_plan.todo
    assert {n.kind for n in builder.final_plan.nodes.values()} == set(NodeKind)
    _, again = _build(main, "gain")
    assert again.did_nothing and again.plans == 1 and again.points_hashed == 24


def test_node_kinds_carry_their_store_kind_and_keep_their_text():
    assert [k.store_kind for k in NodeKind] == ["measurements", "datasets", "analyses"]
    assert NodeKind.DATASET == "dataset" and f"{NodeKind.ANALYSIS}:x" == "analysis:x"
    assert [k for k in NodeKind if k.keyed] == [NodeKind.DATASET, NodeKind.ANALYSIS]
