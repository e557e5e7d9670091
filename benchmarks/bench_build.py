"""Build performance: no-op rebuilds, dataset assembly, acquisition overhead.

    python benchmarks/bench_build.py [--skip-10k]

1. A procedure of 10,000 points (10 events each) is built once, then the
   wall time of a no-op `raff build` (interpreter start included) is
   measured. Goal: <= 1 s.
2. Dataset assembly (every configuration column) of 1,000 and of 10,000
   cached points x 234 channels. Goal: <= 2 s for 1,000.
3. 200 points of 1000 events on the embedded emulator, with the profile of
   where the time went. Goal: >= 80 % in the emulator and the decoder.
4. A build of a 16,384-point scan (1 event each) with one analysis: how many
   plans it made and how many points they hashed. Goal: the points hashed
   once (16,384), not once per node.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CHIPS = "[roc_s0, roc_s1, roc_s2]"


def library(folder: Path) -> Path:
    shutil.copytree(EXAMPLES / "defaults", folder / "defaults")
    shutil.copytree(EXAMPLES / "init", folder / "init")

    def proc(name: str, events: int, params: str) -> str:
        return f"""  - name: {name}
    type: daq
    target_settings: {{power_on_default: ./defaults/V3LDHexaboard-poweron-default.yaml,
                      initial_config: ./init/injection.yaml}}
    daq_settings:
      default: ./defaults/daq-system-config.yaml
      server_override:
        NEvents: {events}
        l1a_generator_settings: [{{name: A, enable: 1, BX: 16, length: 1, flavor: CALPULINT, prescale: 0, followMode: DISABLE}}]
    parameters:
{params}"""
    big = (f"      - key: [{CHIPS}, Top, 0, phase_strobe]\n        range: {{stop: 10}}\n"
           f"      - key: [{CHIPS}, ReferenceVoltage, [0, 1], Calib]\n        range: {{stop: 1000}}\n")
    thousand = f"      - key: [{CHIPS}, ReferenceVoltage, [0, 1], Calib]\n        range: {{stop: 1000}}\n"
    profile = f"      - key: [{CHIPS}, ReferenceVoltage, [0, 1], Calib]\n        range: {{stop: 4000, step: 20}}\n"
    main = folder / "main.yaml"
    main.write_text("procedures:\n" + proc("p10k", 10, big) + proc("p1k", 10, thousand)
                    + proc("acquire200", 1000, profile))
    return main


def raff(*args: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "raffinerie", *args], check=True,
                         capture_output=True, text=True)
    return time.perf_counter() - t0, out.stdout + out.stderr


def assembly_seconds(main: Path, name: str) -> tuple[float, int, int]:
    from raffinerie.builder.datasets import assemble
    from raffinerie.config.checks import validate
    from raffinerie.config.library import load_library
    from raffinerie.config.network import emulator_identity
    from raffinerie.config.resolve import ConfigFiles
    from raffinerie.graph.plan import make_plan
    from raffinerie.store.store import Store

    lib, files = load_library(main), ConfigFiles()
    validate(lib, files=files)
    store = Store(main.parent / ".raffinerie-cache")
    points = make_plan(lib, name, emulator_identity(), store.index(), files).points[name]
    t0 = time.perf_counter()
    columns = assemble(points, store)
    return time.perf_counter() - t0, len(columns["chip"]), len(columns)


def plan_passes(folder: Path) -> tuple[int, int, float]:
    """(plans made, points hashed, seconds) of a build of a 16 x 1024-point scan with one analysis."""
    from common import injection_library

    from raffinerie.analysis.runner import AnalysisRunner
    from raffinerie.builder.executor import Builder
    from raffinerie.builder.progress import Progress
    from raffinerie.config.library import load_library
    from raffinerie.config.resolve import ConfigFiles
    from raffinerie.store.store import Store

    main = injection_library(folder, 1, f"      - key: [{CHIPS}, Top, 0, phase_strobe]\n        range: {{stop: 16}}\n"
                                       f"      - key: [{CHIPS}, ReferenceVoltage, [0, 1], Calib]\n"
                                       "        range: {stop: 1024}\n",
                             "  - {name: gain, type: analysis, daq: scan, module: builtin.injection}\n")
    lib, store = load_library(main), Store(folder / ".raffinerie-cache")
    runner = AnalysisRunner(lib, store, lambda proc: folder / "raff-out" / proc, None)
    report = Builder(lib, ConfigFiles(), store, Progress(quiet=True), runner=runner).build("gain", signals=False)
    return report.plans, report.points_hashed, report.seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-10k", action="store_true", help="skip the 10,000-point parts")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        main_yaml = library(Path(tmp))
        m = str(main_yaml)
        if not args.skip_10k:
            t, _ = raff("build", "p10k", "-c", m, "--quiet")
            print(f"first build of 10,000 points x 10 events: {t:.1f} s ({10_000 / t:.0f} points/s)")
            best = min(raff("build", "p10k", "-c", m, "--quiet")[0] for _ in range(3))
            print(f"no-op raff build of 10,000 cached points: {best:.3f} s wall (goal <= 1 s)")
        raff("build", "p1k", "-c", m, "--quiet")
        t, rows, cols = assembly_seconds(main_yaml, "p1k")
        print(f"dataset assembly, 1,000 points: {t:.2f} s for {rows:,} rows x {cols} columns (goal <= 2 s)")
        if not args.skip_10k:
            t, rows, cols = assembly_seconds(main_yaml, "p10k")
            print(f"dataset assembly, 10,000 points: {t:.2f} s for {rows:,} rows x {cols} columns")
        if not args.skip_10k:
            (Path(tmp) / "passes").mkdir()
            plans, hashed, t = plan_passes(Path(tmp) / "passes")
            print(f"build of 16,384 points + 1 analysis: {plans} plans, {hashed:,} points hashed "
                  f"(goal 16,384: once), {t:.1f} s")
        t, out = raff("build", "acquire200", "-c", m, "--quiet", "--profile")
        print(f"200 points x 1000 events x 3 chips on the embedded emulator: {t:.1f} s wall")
        print("\n".join("  " + line.strip() for line in out.splitlines() if "%" in line))


if __name__ == "__main__":
    main()
