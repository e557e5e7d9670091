"""The tuning chain run as searches against the same chain on fixed grids, on one emulated board.

    python benchmarks/bench_search.py [--seed 1] [--rate 2000]

Two `raff build hexaboard_tuning` processes on fresh copies of the example library and
fresh caches: examples/main_config.yaml (tuning_procedures.yaml: every register scanned over
its grid) and examples/search_config.yaml (tuning_search_procedures.yaml: the registers
searched). Each chain is planned again after its build (all cached: every probe resolved) to
count its points and events per daq procedure, and the hardware time the events take at
`--rate` L1As a second (what a board spends triggering; configuration and readout aside).

Residuals from the emulator's truth (`raffinerie.emulator.model.Board` with each chain's
tuned_config.yaml written in): the rms over each half's live normal channels, averaged over
the halves, of the pedestal (ADC), of the TOA threshold in trim_toa steps and of the TOT
threshold in trim_tot steps, and the worst |median pedestal - 250| of a half.
Goal: adaptive hardware time at most 25 % of the fixed grids', residuals no worse.
The last line reads `hardware time adaptive/fixed: R`.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from common import EXAMPLES

TARGET = 250.0   # the library's pedestal target (vref, pedestal_trim_tuning)


def build(main: Path, seed: int) -> float:
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "raffinerie", "build", "hexaboard_tuning", "-c", str(main),
                           "--seed", str(seed), "-w", "2", "--quiet"], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"bench_search: the build of {main.name} failed:\n{done.stderr}")
    return time.perf_counter() - t0


def counts(main: Path, seed: int) -> dict[str, tuple[int, int]]:
    """procedure -> (points, events) of the built chain."""
    from raffinerie.analysis.code import code_provider
    from raffinerie.config.library import load_library
    from raffinerie.config.network import identity
    from raffinerie.graph.plan import make_plan
    from raffinerie.store.layout import CacheIndex

    plan = make_plan(load_library(main), "hexaboard_tuning", identity(None, seed),
                     CacheIndex(main.parent / ".raffinerie-cache"), code=code_provider(main, None))
    assert all(p.base is not None and not p.to_acquire for p in plan.points.values()), "the chain is not built"
    return {name: (p.total, p.total * p.events_per_point()) for name, p in plan.points.items()}


def residuals(main: Path, seed: int) -> dict[str, float]:
    """What the truth says of the board as the chain tuned it."""
    from raffinerie.emulator.model import Board
    from raffinerie.emulator.registers import RegisterFile

    regs = RegisterFile()
    for path in ("defaults/V3LDHexaboard-poweron-default.yaml", "init/tuning_start.yaml"):
        doc = yaml.safe_load((EXAMPLES / path).read_text())
        regs.write({k: v for k, v in doc.items() if k.startswith("roc_s")})
    tuned = next((main.parent / "raff-out" / "hexaboard_tuning").rglob("tuned_config.yaml"))  # [<board>/]
    regs.write(yaml.safe_load(tuned.read_text()))
    board = Board(seed)
    normal = slice(0, 36)
    live = board.noise[:, :, normal] > 0
    pedestal = board.state(regs, False)["pedestal"][:, :, normal]
    state = board.state(regs, True)
    toa = state["toa_threshold"][:, :, normal] / (0.3 * board.toa_trim_step[:, :, normal])
    tot = state["tot_threshold"][:, :, normal] / (2.0 * board.tot_trim_step[:, :, normal])

    def spread(x):
        return float(np.mean([x[c, h][live[c, h]].std() for c in range(x.shape[0]) for h in range(2)]))

    medians = [np.median(pedestal[c, h][live[c, h]]) for c in range(pedestal.shape[0]) for h in range(2)]
    return {"pedestal spread (ADC)": spread(pedestal), "pedestal offset (ADC)": float(np.max(np.abs(
        np.array(medians) - TARGET))), "TOA spread (trim steps)": spread(toa), "TOT spread (trim steps)": spread(tot)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1, help="the emulated board")
    ap.add_argument("--rate", type=float, default=2000.0, help="L1A rate of the hardware (Hz)")
    args = ap.parse_args()
    found, truth, wall = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind, config in (("fixed", "main_config.yaml"), ("adaptive", "search_config.yaml")):
            folder = Path(tmp) / kind
            shutil.copytree(EXAMPLES, folder)
            wall[kind] = build(folder / config, args.seed)
            found[kind], truth[kind] = counts(folder / config, args.seed), residuals(folder / config, args.seed)
    print(f"{'daq procedure':<30} {'points fixed':>12} {'adaptive':>9} {'events fixed':>13} {'adaptive':>9}")
    for name in found["fixed"]:
        (pf, ef), (pa, ea) = found["fixed"][name], found["adaptive"][name]
        print(f"{name:<30} {pf:>12} {pa:>9} {ef:>13,} {ea:>9,}")
    total = {k: tuple(sum(v[i] for v in found[k].values()) for i in (0, 1)) for k in found}
    print(f"{'whole chain':<30} {total['fixed'][0]:>12} {total['adaptive'][0]:>9} {total['fixed'][1]:>13,} "
          f"{total['adaptive'][1]:>9,}")
    hours = {k: total[k][1] / args.rate for k in total}
    print(f"hardware time at {args.rate:g} Hz: fixed {hours['fixed']:.1f} s, adaptive {hours['adaptive']:.1f} s; "
          f"build wall on the embedded emulator: fixed {wall['fixed']:.1f} s, adaptive {wall['adaptive']:.1f} s")
    for what in truth["fixed"]:
        print(f"residual {what:<26} fixed {truth['fixed'][what]:6.3f}  adaptive {truth['adaptive'][what]:6.3f}")
    print(f"hardware time adaptive/fixed: {hours['adaptive'] / hours['fixed']:.3f}")


if __name__ == "__main__":
    main()
