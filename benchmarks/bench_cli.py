"""Wall time of the light commands, interpreter start included (best of 5).

    python benchmarks/bench_cli.py

Goals: `raff --help` and `raff validate` on the examples <= 0.3 s each;
`raff plan characterisation` with everything cached <= 0.5 s. The example
library is built once in a temporary copy for the cached figures.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def best_of(args: list[str], runs: int = 5) -> float:
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "raffinerie", *args], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        lib = Path(tmp) / "examples"
        shutil.copytree(EXAMPLES, lib, ignore=shutil.ignore_patterns(".raffinerie-cache", "raff-out"))
        m = str(lib / "main_config.yaml")
        rows = [("raff --help", ["--help"]),
                ("raff validate (examples)", ["validate", "-c", m]),
                ("raff plan characterisation, nothing cached", ["plan", "characterisation", "-c", m])]
        for label, args in rows:
            print(f"{label:48} {best_of(args):.3f} s")
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "raffinerie", "build", "characterisation", "-c", m, "--quiet"],
                       check=True, stdout=subprocess.DEVNULL)
        print(f"{'raff build characterisation, from scratch':48} {time.perf_counter() - t0:.3f} s (once)")
        for label, args in (("raff plan characterisation, all cached", ["plan", "characterisation", "-c", m]),
                            ("raff build characterisation, up to date", ["build", "characterisation", "-c", m])):
            print(f"{label:48} {best_of(args):.3f} s")


if __name__ == "__main__":
    main()
