"""`raff plan` of the real Datenraffinerie 1.0 test library, read as it is and after `raff migrate`.

    python benchmarks/bench_dr10.py [--repo DIR] [--repeat 7]

The library is `tests/configuration/` of Phylex/Datenraffinerie (public; the
`fetch` tool of this workplace puts it at /work/.mirror/Phylex+Datenraffinerie/repo,
or give a clone with --repo). Prints the median wall time of whole `raff plan`
processes for test_1 (5 points) and full_toa_scan (a template procedure,
refused for its phase_strobe 16), both ways, and the size of the migrated
library. Goal (issue 23): plan test_1 <= 0.5 s.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path("/work/.mirror/Phylex+Datenraffinerie/repo")


def wall(main: Path, name: str, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "raffinerie", "plan", name, "-c", str(main)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, default=REPO)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    if not args.repo.exists():
        sys.exit(f"{args.repo}: no Datenraffinerie repository (fetch Phylex/Datenraffinerie, or give --repo)")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        archive = subprocess.run(["git", "-C", str(args.repo), "archive", "HEAD", "tests/configuration"],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "x", "-C", str(tmp)], input=archive, check=True)
        direct = tmp / "tests" / "configuration" / "main_test_config.yaml"
        subprocess.run([sys.executable, "-m", "raffinerie", "migrate", str(direct), "-o", str(tmp / "m")],
                       check=True, stdout=subprocess.DEVNULL)
        migrated = tmp / "m" / "main_config.yaml"
        size = sum(p.stat().st_size for p in (tmp / "m").rglob("*") if p.is_file())
        original = sum(p.stat().st_size for p in direct.parent.rglob("*") if p.is_file())
        print(f"the 1.0 library: {original / 1e3:.0f} kB; migrated: {size / 1e6:.1f} MB")
        for name in ("test_1", "full_toa_scan"):
            a, b = wall(direct, name, args.repeat), wall(migrated, name, args.repeat)
            print(f"raff plan {name:13}: {a:.3f} s read as it is, {b:.3f} s migrated "
                  f"(median of {args.repeat})")
    print("goal: raff plan test_1 read as it is <= 0.5 s")


if __name__ == "__main__":
    main()
