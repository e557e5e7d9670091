"""QC verdicts of a hexaboard or module from its per-channel pedestal table.

The rules are those of the public module-testing code, each limit a field of
`QcLimits` (sources beside each):

- only channels that read a sensor cell (pad > 0) are judged;
- *dead*: noise (adc_stdd) exactly 0;
- *noisy* (calibration cells excluded): noise above the median noise of the
  normal cells by more than 2 ADC on a module (a sensor attached), above
  2 ADC on a bare hexaboard;
- *untunable*: a channel the tuning chain could not bring into range;
- *no noise*: a pedestal without a noise value (NaN in hexactrl's file):
  undecided, flagged and listed, not counted bad;
- *injected*: a channel the run injects charge into (a .raw run's
  configuration says so): undecided in the same way;
- the readout grade from the fraction of bad cells (dead, noisy or
  untunable, over the normal and calibration cells): A below 2 %, B below
  5 %, C above; the board fails at grade C, when a chip's fraction of
  corrupt halves is above its limit, or when cells have no data.

Pure numpy on columns; `Verdict.document()` is what `raff qc --json` prints.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

from raffinerie.geometry import Geometry, Role


class BoardKind(enum.Enum):
    MODULE = "module"          # a sensor is attached: noise is judged against the board's median
    HEXABOARD = "hexaboard"    # a bare hexaboard: against a fixed limit


class CellFlag(enum.IntFlag):
    DEAD = 1
    NOISY = 2
    UNTUNABLE = 4
    NO_DATA = 8
    ZERO_MEAN = 16     # adc_mean 0: the database's `0` flag; reported, not a reason to fail
    # a pedestal but no noise: hexactrl's runsummary writes NaN for the adc_stdd of some live
    # channels (iqr 1-3 ADC; 11 of 234 and 21 of 234 in two real LD runs). Neither dead nor
    # noisy can be decided: flagged, listed, not counted bad, not a reason to fail.
    NO_NOISE = 32
    INJECTED = 64      # the run injects charge into it: its ADC is a pulse, not a pedestal (undecided)


# the flags whose pads a verdict lists, by the key of the list (`dead` -> `dead_pads`)
LISTED = (("dead", CellFlag.DEAD), ("noisy", CellFlag.NOISY), ("untunable", CellFlag.UNTUNABLE),
          ("no_noise", CellFlag.NO_NOISE), ("injected", CellFlag.INJECTED), ("no_data", CellFlag.NO_DATA))


@dataclass(frozen=True)
class QcLimits:
    kind: BoardKind = BoardKind.MODULE
    # cmu-hgc-mac/hgcal-module-testing-gui DBTools.pedestal_upload: median + 2 ADC
    noisy_above_median: float = 2.0
    # the bare-hexaboard rule of the same code's conventions (reference README): 2 ADC
    noisy_above: float = 2.0
    # TestingGUIBase readout grade (ModuleProdNumbers_Oct2024): A < 2 %, B < 5 % bad cells
    grade_a_below: float = 0.02
    grade_b_below: float = 0.05
    # raffinerie's choice, no public convention: a chip sending more corrupt halves fails the board
    max_corrupt_fraction: float = 0.001


@dataclass(frozen=True)
class Verdict:
    geometry: str
    limits: QcLimits
    median_noise: float
    flags: np.ndarray = field(repr=False)      # CellFlag bits per geometry row
    pads: dict[str, list[int]]                 # "dead", "noisy", "untunable", "no_noise", ...
    corrupt_fraction: dict[int, float | None]
    bad_fraction: float
    grade: str
    reasons: list[str]

    @property
    def passed(self) -> bool:
        return not self.reasons

    def document(self) -> dict:
        return {"verdict": "pass" if self.passed else "fail", "reasons": self.reasons,
                "grade": self.grade, "bad_fraction": round(self.bad_fraction, 6),
                "geometry": self.geometry, "kind": self.limits.kind.value,
                "median_noise": _rounded(self.median_noise),
                **{f"{name}_pads": self.pads[name] for name, _ in LISTED},
                "corrupt_fraction": {f"roc_s{c}": v for c, v in self.corrupt_fraction.items()},
                "limits": {k: (v.value if isinstance(v, enum.Enum) else v)
                           for k, v in self.limits.__dict__.items()}}


def _rounded(v: float):
    return None if not np.isfinite(v) else round(float(v), 4)


def on_geometry(table: dict, geometry: Geometry, column: str) -> np.ndarray:
    """`column` of a per-channel table, one value per geometry row (NaN where the table has none).

    Several rows for one channel (several points) are averaged."""
    values = np.full(len(geometry.pad), np.nan)
    at = geometry.index_of(table["chip"], table["channeltype"], table["channel"])
    known = at >= 0
    sums = np.bincount(at[known], weights=np.asarray(table[column], float)[known], minlength=len(values))
    counts = np.bincount(at[known], minlength=len(values))
    np.divide(sums, counts, out=values, where=counts > 0)
    return values


def judge(table: dict, geometry: Geometry, limits: QcLimits = QcLimits(),
          corrupt_fraction: dict[int, float | None] | None = None,
          untunable: np.ndarray | None = None, injected: np.ndarray | None = None) -> Verdict:
    """The verdict of one board from its pedestal table (chip, channeltype, channel, adc_mean, adc_stdd).

    `untunable`, `injected`: a boolean per geometry row (from the tuning chain; from the run's
    configuration)."""
    noise = on_geometry(table, geometry, "adc_stdd")
    mean = on_geometry(table, geometry, "adc_mean")
    sensor = geometry.pad > 0
    normal = geometry.mask(Role.CELL)
    calib = geometry.mask(Role.CALIB)
    pulsed = np.zeros(len(noise), dtype=bool) if injected is None else np.asarray(injected, bool)
    measured = np.isfinite(noise) & ~pulsed
    present = np.isfinite(mean)
    median = float(np.median(noise[normal & measured])) if (normal & measured).any() else np.nan
    limit = median + limits.noisy_above_median if limits.kind is BoardKind.MODULE else limits.noisy_above
    flags = np.zeros(len(noise), dtype=np.int64)
    flags |= np.where(sensor & measured & (noise == 0), CellFlag.DEAD, 0)
    flags |= np.where(sensor & ~calib & measured & (noise > limit), CellFlag.NOISY, 0)
    if untunable is not None:
        flags |= np.where(sensor & untunable, CellFlag.UNTUNABLE, 0)
    flags |= np.where(sensor & pulsed, CellFlag.INJECTED, 0)
    flags |= np.where(sensor & present & ~pulsed & ~np.isfinite(noise), CellFlag.NO_NOISE, 0)
    flags |= np.where(sensor & ~present & ~pulsed, CellFlag.NO_DATA, 0)
    flags |= np.where(mean == 0, CellFlag.ZERO_MEAN, 0)
    pads = {name: sorted(int(p) for p in geometry.pad[(flags & flag) != 0]) for name, flag in LISTED}
    judged = normal | calib
    bad = (flags & (CellFlag.DEAD | CellFlag.NOISY | CellFlag.UNTUNABLE)) != 0
    bad_fraction = float(bad[judged].sum() / max(int(judged.sum()), 1))
    grade = ("A" if bad_fraction < limits.grade_a_below
             else "B" if bad_fraction < limits.grade_b_below else "C")
    corrupt = corrupt_fraction if corrupt_fraction is not None else {c: None for c in range(geometry.n_chips)}
    return Verdict(geometry.name, limits, median, flags, pads, corrupt, bad_fraction, grade,
                   _reasons(pads, bad, judged, bad_fraction, grade, corrupt, limits))


def _reasons(pads, bad, judged, bad_fraction, grade, corrupt, limits) -> list[str]:
    reasons = []
    if grade == "C":
        counts = ", ".join(f"{len(pads[k])} {k}" for k in ("dead", "noisy", "untunable") if pads[k])
        reasons.append(f"readout grade C: {int(bad[judged].sum())} of {int(judged.sum())} cells bad "
                       f"({100 * bad_fraction:.1f} %, grade C from {100 * limits.grade_b_below:g} %): "
                       f"{counts}")
    for chip, fraction in sorted(corrupt.items()):
        if fraction is not None and fraction > limits.max_corrupt_fraction:
            reasons.append(f"roc_s{chip}: {100 * fraction:.2f} % of its halves corrupt "
                           f"(limit {100 * limits.max_corrupt_fraction:g} %)")
    if pads["no_data"]:
        reasons.append(f"{len(pads['no_data'])} cells have no data (pads {_pad_list(pads['no_data'])})")
    return reasons


def _pad_list(pads: list[int], shown: int = 12) -> str:
    more = f", ... ({len(pads) - shown} more)" if len(pads) > shown else ""
    return ", ".join(map(str, pads[:shown])) + more
