"""Wall time of the light commands, interpreter start included.

    python benchmarks/bench_cli.py

Goal: `raff --help` and `raff validate` on the examples <= 0.3 s each, and
`raff plan` of the example workflow <= 0.5 s (best of 5 runs each).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
MAIN = str(EXAMPLES / "main_config.yaml")

COMMANDS = {
    "raff --help": ["--help"],
    "raff validate (examples)": ["validate", "-c", MAIN],
    "raff plan characterisation": ["plan", "characterisation", "-c", MAIN],
}


def best_of(args: list[str], runs: int = 5) -> float:
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "raffinerie", *args], check=True,
                       stdout=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - t0)
    return best


if __name__ == "__main__":
    for label, args in COMMANDS.items():
        print(f"{label:32} {best_of(args):.3f} s wall (best of 5)")
