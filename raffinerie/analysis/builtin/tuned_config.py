"""The tuned configuration of a board: every register its tuning chain changed, in one file.

Input: the dataset of a daq procedure that stands on the chain's calibrations
(`calibration: [vref, pedestal_trim, toa_threshold, ...]`), usually a pedestal
run of the tuned board. Those calibrations are merged in the order applied, a
later one winning, exactly as that procedure's points were configured, into
`tuned_config.yaml`: the library's target format (`roc_sN: Block: index:
param: value`), loadable as an `initial_config` and by the slow-control
servers as it is. It is a calibration too, so a daq procedure can stand on
the tuned board with `calibration: NAME`.

Summary: one row per (chip, block, parameter) set: the calibration that set
it (the last one that did), how many places, how many of the chip's channels
(halves) it left out (`missing`: those its link flagged, named in the notes),
and the least, median and greatest value. Plot `tuned_board`: per half, the pedestal median
and spread the data show with the tuned configuration, and the reference values chosen.

Plot `tuning_summary`, the one-page summary (`tuning_page`): pedestal spread and median per
half before and after, the values chosen, the gain, the channels left untuned. "Before" and
the gain come from analyses it `uses`, named by the parameters `before` (a builtin.pedestal
of the untuned board) and `gain` (a builtin.injection of the tuned one); without them the
page shows the tuned board alone.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from raffinerie import words
from raffinerie.config.tree import get_path, has_path, merge, normalize
from raffinerie.hgcroc import CHANNELS_PER_CHIP, HALVES

from . import tuning_page
from .common import Distillery, chip_panels

# instances of a block on a chip: a register set on fewer of them was left untuned on the others
EXPECTED = {"ch": CHANNELS_PER_CHIP, "ReferenceVoltage": HALVES, "Top": 1}

SPREAD_COLUMNS = ["chip", "half", "channels", "pedestal_median", "pedestal_spread", "noise_median"]


class TunedConfig(Distillery):
    # names of analyses it `uses`: a pedestal run of the untuned board, an injection scan of the tuned one
    defaults: dict = {"before": None, "gain": None}
    naming_parameters = ("before", "gain")   # analysis.code.NAMING_PARAMETERS: raff validate checks them
    plots = ("tuning_summary", "tuned_board")
    calibrates = True
    calibration_file = "tuned_config.yaml"
    reads_calibrations = True      # the runner sets `applied_calibrations`: (name, overlay), in order
    applied_calibrations: list = []

    def analyse(self, data):
        if not self.applied_calibrations:
            raise ValueError("its daq procedure stands on no calibration: there is no tuned configuration "
                             "to write (give that procedure `calibration: [vref, pedestal_trim, ...]`)")
        tuned: dict = {}
        setters: dict = {}
        for name, overlay in self.applied_calibrations:
            overlay = normalize(overlay or {})
            tuned = merge(tuned, overlay)
            for place in _places(overlay):
                setters[place] = name
        summary = _summary(tuned, _setters_by_register(setters))
        spread = half_spread(data)
        for r in spread.itertuples():
            self.notes.append(f"roc_s{r.chip} half {r.half}: pedestal median {r.pedestal_median:.1f} ADC, "
                              f"spread {r.pedestal_spread:.2f} ADC over {r.channels} channels")
        links = [n for n, _ in self.applied_calibrations]
        self.notes.append("tuned configuration from " + " → ".join(links)
                          + f": {int(summary.places.sum())} register values")
        untuned = tuning_page.flagged(self.upstream, links) + untuned_lines(tuned, summary)
        self.notes += untuned
        page = tuning_page.halves(spread, tuned, self._used("before", tuning_page.before_spread),
                                  self._used("gain", tuning_page.half_gain))
        self.notes += tuning_page.note_lines(page)
        return summary, {"tuning_summary": lambda: tuning_page.draw(page, untuned, " → ".join(links)),
                         "tuned_board": lambda: self._plot(spread, tuned)}, tuned

    def _used(self, parameter: str, read):
        """The table `read` makes of the summary of the used analysis the parameter names."""
        name = self.parameters[parameter]
        if name is None:
            return None
        if name not in self.upstream:
            raise ValueError(f"parameter {parameter}: '{name}' is not an analysis it uses (give it "
                             f"`uses: [{name}]`; it uses {sorted(self.upstream) or 'none'})")
        if self.upstream[name] is None:
            raise ValueError(f"parameter {parameter}: '{name}' writes no summary table")
        return read(self.upstream[name], name)

    def _plot(self, spread: pd.DataFrame, tuned: dict):
        fig, panels = chip_panels(spread.chip.unique(), "the tuned board: pedestal median and spread per "
                                  "half (bars), and the reference values the chain chose")
        for chip, ax in panels.items():
            mine = spread[spread.chip == chip]
            x = mine.half.to_numpy()
            ax.bar(x, mine.pedestal_median, yerr=mine.pedestal_spread, capsize=6, color="tab:blue", alpha=0.7)
            for half, median, std in zip(x, mine.pedestal_median, mine.pedestal_spread):
                ax.annotate(f"{median:.0f} ± {std:.1f}", (half, median), textcoords="offset points",
                            xytext=(0, 12), ha="center", fontsize=8)
            refs = (tuned.get(f"roc_s{chip}") or {}).get("ReferenceVoltage") or {}
            lines = [f"half {h}: " + ", ".join(f"{k} {v}" for k, v in sorted(refs[h].items()))
                     for h in sorted(refs)]
            ax.text(0.02, 0.02, "\n".join(lines) or "no reference value set", transform=ax.transAxes,
                    fontsize=7, va="bottom")
            ax.set_ylim(0, 1.15 * max(spread.pedestal_median.max(), 1))   # room for the labels
            ax.set_xticks([0, 1], ["half 0", "half 1"])
            ax.set_xlim(-0.6, 1.6)
        panels[min(panels)].set_ylabel("pedestal (ADC counts)")
        return fig


def untuned_lines(tuned: dict, summary: pd.DataFrame) -> list[str]:
    """The places a link of the chain set on some channels (halves) of a chip but not on others:
    those it flagged, left at the base config's value. Named, one line per register."""
    lines = []
    for r in summary[summary.missing > 0].itertuples():
        lacking = [i for i in range(EXPECTED[r.block]) if not has_path(tuned, (r.chip, r.block, i, r.parameter))]
        where = "channels" if r.block == "ch" else f"{r.block} instances"
        lines.append(f"{r.chip} {r.parameter}: {r.set_by} left {len(lacking)} {where} untuned "
                     f"({words.int_runs(lacking)}): they keep the base config's value")
    return lines


def half_spread(data: pd.DataFrame) -> pd.DataFrame:
    """Per (chip, half) over the normal channels: how many, the median pedestal, the spread
    (standard deviation across channels) and the median noise; dead (zero-noise) channels left out."""
    rows = data[(data.channeltype == 0) & (data.adc_stdd > 0)]
    channel = rows.groupby(["chip", "half", "channel"], as_index=False)[["adc_mean", "adc_stdd"]].mean()
    return tuning_page.per_half(channel, "adc_mean", "adc_stdd")[SPREAD_COLUMNS]


def _places(tree: dict, prefix: tuple = ()):
    """(chip, block, index, parameter) of every value in a target overlay."""
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _places(value, prefix + (key,))
        else:
            yield prefix + (key,)


def _summary(tuned: dict, setters: dict) -> pd.DataFrame:
    values: dict = {}
    for place in _places(tuned):
        chip, block, _index, param = place
        values.setdefault((chip, block, param), []).append(get_path(tuned, place))
    rows = [(chip, block, param, ", ".join(setters[(chip, block, param)]), len(v),
             max(EXPECTED.get(block, len(v)) - len(v), 0), min(v), float(np.median(v)), max(v))
            for (chip, block, param), v in sorted(values.items(), key=lambda kv: tuple(map(str, kv[0])))]
    return pd.DataFrame(rows, columns=["chip", "block", "parameter", "set_by", "places", "missing",
                                       "min", "median", "max"])


def _setters_by_register(setters: dict) -> dict:
    """(chip, block, param) -> the calibrations whose value of it stands somewhere, in order."""
    out: dict = {}
    for (chip, block, _index, param), name in setters.items():
        out.setdefault((chip, block, param), {})[name] = None
    return {k: list(v) for k, v in out.items()}


DISTILLERY = TunedConfig
