"""Scale: a 131,072-point scan from plan to plots, in bounded memory (issue 13).

    .venv/bin/python benchmarks/bench_scale.py [--calib-step N] [--workdir DIR]

The scan: Calib 0-4095 x phase_strobe 0-15 x two preamp gains (Cf 4 and 8)
on three chips, 10 events per point, acquired on the embedded emulator:
131,072 points, 30.7 M dataset rows. `--calib-step 64` makes it 2,048
points, for a quick look. With `--workdir`, a scan acquired before is
reused (its acquisition is not measured again).

Every measure is a `raff` process as a user runs it; wall time, and peak
RSS of its whole process tree (analysis workers included), from wait4.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import injection_library

CHIPS = "[roc_s0, roc_s1, roc_s2]"


def library(folder: Path, calib_step: int) -> Path:
    return injection_library(folder, 10, f"""\
      - key: [{CHIPS}, GlobalAnalog, [0, 1], Cf]
        values: [4, 8]
      - key: [{CHIPS}, Top, 0, phase_strobe]
        range: {{stop: 16}}
      - key: [{CHIPS}, ReferenceVoltage, [0, 1], Calib]
        range: {{stop: 4096, step: {calib_step}}}
""", extra="  - {name: timewalk, type: analysis, daq: scan, module: builtin.timewalk}\n")


def raff(*args: str) -> tuple[float, float, str]:
    """(wall s, peak RSS MB of the process tree, output) of one `raff` command."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "raffinerie", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"raff {' '.join(args)} failed ({proc.returncode}):\n{out[-3000:]}")
    return wall, usage.ru_maxrss / 1024, out


def line(what: str, wall: float, rss: float | None = None, goal: str = "") -> None:
    memory = f", peak RSS {rss:6.0f} MB" if rss is not None else ""
    print(f"  {what:42} {wall:8.2f} s{memory}   {goal}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calib-step", type=int, default=1)
    ap.add_argument("--workdir", type=Path, help="keep the library and cache here (reused if there)")
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="raff-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    main_yaml = str(library(work, args.calib_step))
    cache = work / ".raffinerie-cache"
    points = 2 * 16 * len(range(0, 4096, args.calib_step))
    print(f"scan of {points:,} points x 10 events x 3 chips ({points * 234 / 1e6:.1f} M dataset rows), in {work}")

    wall, rss, out = raff("build", "scan", "-c", main_yaml)
    acquired = next((ln for ln in out.splitlines() if "points acquired" in ln), "")
    if acquired and not acquired.startswith("scan: 0 points"):
        line("acquisition + assembly (raff build scan)", wall, rss, acquired.split(": ", 1)[-1])
    else:
        print("  (the scan was acquired before, in this workdir)")
    shutil.rmtree(cache / "datasets")  # the dataset alone, made again from the cached points
    for stamp in (cache / "names" / "stamps").glob("*.json"):
        stamp.unlink()
    wall, rss, out = raff("build", "scan", "-c", main_yaml)
    assembly = next((ln for ln in out.splitlines() if "dataset of" in ln), "")
    line("dataset assembly (plan + assemble)", wall, rss, "goal <= 60 s, <= 2048 MB")
    print(f"    {assembly}")
    wall, rss, _ = raff("show", "scan", "-c", main_yaml)
    line("raff show scan", wall, rss, "goal <= 2 s")
    wall, rss, out = raff("build", "timewalk", "-c", main_yaml)
    line("timewalk built-in (raff build timewalk)", wall, rss, "goal <= 60 s, <= 2048 MB")
    wall, rss, out = raff("build", "timewalk", "-c", main_yaml, "--force", "--dask", "local:2")
    workers = next((ln for ln in out.splitlines() if ln.startswith("dask workers")), "")
    line("timewalk again with --dask local:2", wall, rss, "goal: each worker < 1536 MB")
    print(f"    {workers}")
    raff("build", "timewalk", "-c", main_yaml)  # a no-op that plans in full and stamps
    wall = min(raff("build", "timewalk", "-c", main_yaml)[0] for _ in range(3))
    line("no-op raff build timewalk (best of 3)", wall, None, "goal <= 0.5 s")
    raff("plan", "timewalk", "-c", main_yaml, "--check")
    wall = min(raff("plan", "timewalk", "-c", main_yaml, "--check")[0] for _ in range(3))
    line("raff plan timewalk --check (best of 3)", wall, None, "goal <= 0.5 s")
    wall, rss, out = raff("plan", "timewalk", "-c", main_yaml)
    line("raff plan timewalk (in full)", wall, rss)
    wall, rss, _ = raff("cache", "ls", "-c", main_yaml)
    line("raff cache ls", wall, rss)
    wall, rss, _ = raff("cache", "verify", "-c", main_yaml)
    line("raff cache verify", wall, rss)
    entry = next(p for p in (cache / "measurements").glob("*/*"))
    files = sorted(p.name for p in entry.rglob("*") if p.is_file())
    inodes = sum(len(names) + len(dirs) for _, dirs, names in os.walk(cache / "measurements"))
    print(f"  files per measurement: {len(files)} ({', '.join(files)}); "
          f"{inodes:,} files and folders under measurements/ for {points:,} points")
    if not args.workdir:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
