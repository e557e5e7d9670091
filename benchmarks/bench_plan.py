"""Wall time of `raff plan` on large scans over the full LD power-on default.

    python benchmarks/bench_plan.py [--power-on-default FILE]

Prints the wall time of `raff plan` (interpreter start included) for a
131,072-point scan (Calib 0..4095 x phase_strobe 0..15 x two Cf gains), and
the cost per point from 10,240 to 1,048,576 points: (wall - wall of a
1-point plan) / points. Each figure is the median of 5 runs (of 1 for a million points).
Goal (issue 23): the 131k plan <= 1.0 s over the real 167 kB power-on default of
../shared/data/reference/datenraffinerie-0.1.2/tests/configuration/defaults/; the cost per
point flat.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parent / "examples"
CHIPS = "[roc_s0, roc_s1, roc_s2]"

AXES = {
    "gain": f"- key: [{CHIPS}, GlobalAnalog, [0, 1], Cf]\n        values: [4, 8]",
    "phase": f"- key: [{CHIPS}, Top, 0, phase_strobe]\n        range: {{stop: 16}}",
    "toa": f"- key: [{CHIPS}, ReferenceVoltage, [0, 1], Toa_vref]\n        range: {{start: 100, stop: 116}}",
    "calib640": f"- key: [{CHIPS}, ReferenceVoltage, [0, 1], Calib]\n        range: {{stop: 640}}",
    "calib": f"- key: [{CHIPS}, ReferenceVoltage, [0, 1], Calib]\n        range: {{stop: 4096}}",
}
SCANS = {  # name: (axes, points)
    "single": ([], 1),
    "p10k": (["phase", "calib640"], 10_240),
    "p131k": (["gain", "phase", "calib"], 131_072),
    "p1m": (["toa", "phase", "calib"], 1_048_576),
}


def library(folder: Path, pod: Path) -> Path:
    shutil.copy(pod, folder / "pod.yaml")
    shutil.copy(EXAMPLES / "defaults" / "daq-system-config.yaml", folder / "daq.yaml")
    procs = []
    for name, (axes, _) in SCANS.items():
        params = "\n      ".join(AXES[a] for a in axes)
        procs.append(f"""  - name: {name}
    type: daq
    target_settings: {{power_on_default: ./pod.yaml}}
    daq_settings: {{default: ./daq.yaml}}
    parameters:
      {params}
""")
    main = folder / "main.yaml"
    main.write_text("procedures:\n" + "".join(procs))
    return main


def wall(main: Path, name: str, repeat: int = 5) -> float:
    """Median wall time of `repeat` whole `raff plan` processes."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "raffinerie", "plan", name, "-c", str(main),
                        "--cache", str(main.parent / "cache")], check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--power-on-default", type=Path,
                    default=EXAMPLES / "defaults" / "V3LDHexaboard-poweron-default.yaml")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        main = library(Path(tmp), args.power_on_default)
        print(f"power-on default: {args.power_on_default} "
              f"({args.power_on_default.stat().st_size / 1000:.0f} kB)")
        base = wall(main, "single")
        print(f"raff plan, 1 point:              {base:6.3f} s wall (start-up, loading, validation)")
        for name in ("p10k", "p131k", "p1m"):
            points = SCANS[name][1]
            t = wall(main, name, repeat=1 if points > 500_000 else 5)
            per_point = (t - base) / points * 1e6
            print(f"raff plan, {points:>9,} points: {t:6.3f} s wall, {per_point:5.2f} us per point")


if __name__ == "__main__":
    main()
