"""TOA versus sampling phase and versus charge; the pulse shape through the phase.

For each injected channel and each charge at which TOA fires in most events,
TOA is read against `phase_strobe`; the shift per phase step is the median of
the slopes between consecutive phase settings (TOA unwrapped across its
1024 wrap), which one mislabelled phase cannot bias. The timewalk is TOA at
the smallest firing charge minus TOA at the largest, the median over phases.

Points that contradict their label (labelled "no injection" but firing) are
left out and named in the notes: taken at face value, such a point would be
"the smallest charge" and shrink the timewalk to a few LSB. Points whose
`phase_strobe` is unknown (a run yaml without it) are left out too. Any other
scan axis is analysed value by value (one summary row per channel and value).

Summary columns: chip, channeltype, channel, [other scan axes],
toa_per_phase_step, timewalk_lsb, calib_low, calib_high (the charges the
timewalk compares), n_phases, n_charges, n_left_out (points left out as
mislabelled), flag (`ok`, `mislabelled points left out`, `no firing points`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .common import CHANNEL, Distillery, channel_colors, chip_panels, describe, injected_rows, \
    mislabelled_points, no_data, scan_axes

WRAP = 1024
MODELLED = ("phase_strobe", "Calib")


def wrapped(d):
    """A TOA difference brought into [-512, 512)."""
    return (np.asarray(d) + WRAP / 2) % WRAP - WRAP / 2


def unwrap_from(reference: float, ys: np.ndarray) -> np.ndarray:
    """TOA values of one line without 1024 jumps, its first point within 512 of `reference`.

    Lines unwrapped each from its own first point can land a whole bunch
    crossing (1024 LSB) apart; a common reference keeps them comparable.
    """
    if not len(ys):
        return ys
    start = reference + wrapped(ys[0] - reference)
    return start + np.concatenate([[0.0], np.cumsum(wrapped(np.diff(ys)))])


MAX_LINES = 12  # lines per panel: a full scan's 4096 charges would be one unreadable smear


def some(values: list) -> list:
    """At most MAX_LINES of `values`, evenly spaced, the first and last included."""
    if len(values) <= MAX_LINES:
        return values
    return [values[i] for i in np.linspace(0, len(values) - 1, MAX_LINES).round().astype(int)]


class Timewalk(Distillery):
    defaults = {"injected_channels": None, "min_efficiency": 0.9}
    plots = ("toa_vs_phase", "toa_vs_charge", "adc_vs_phase")
    injected_only = True

    def analyse(self, data):
        p = self.parameters
        for column in MODELLED:
            if column not in data:
                raise ValueError(f"the dataset has no {column} column")
        injected = injected_rows(data, p["injected_channels"])
        check = mislabelled_points(data, self.notes, injected=injected)
        rows = check.drop(data[injected])
        unknown = rows.phase_strobe.isna()
        if unknown.any():
            self.notes.append(f"{rows.loc[unknown, 'point'].nunique() if 'point' in rows else unknown.sum()} "
                              "points of unknown phase_strobe left out of the timewalk analysis")
            rows = rows[~unknown]
        extra = scan_axes(rows, MODELLED)
        if extra:
            self.notes.append(f"scan axes {', '.join(extra)} are not modelled: each value analysed separately")
        firing = rows[rows.toa_efficiency >= p["min_efficiency"]]
        if firing.empty:
            raise ValueError("TOA never fires on the injected channels")
        cells = firing.groupby(CHANNEL + extra + ["Calib", "phase_strobe"], as_index=False,
                               dropna=False).toa_mean.mean()
        summary = self._summary(rows, cells, extra, len(check.points))
        adc = rows.groupby(CHANNEL + ["Calib", "phase_strobe"], as_index=False).adc_mean.mean()
        chips = self.chips if self.chips is not None else data.chip.unique()
        return summary, {
            "toa_vs_phase": lambda: self._by(cells, chips, "phase_strobe", "Calib", "toa_mean",
                                             "TOA (LSB, 25 ns / 1024)", "phase_strobe (1.5625 ns steps)"),
            "toa_vs_charge": lambda: self._by(cells, chips, "Calib", "phase_strobe", "toa_mean",
                                              "TOA (LSB, 25 ns / 1024)", "Calib (DAC steps)"),
            "adc_vs_phase": lambda: self._by(adc, chips, "phase_strobe", "Calib", "adc_mean", "ADC (counts)",
                                             "phase_strobe (1.5625 ns steps)")}, None

    @staticmethod
    def _summary(rows, cells, extra, n_left_out):
        channel = CHANNEL + extra
        # shift per phase step: consecutive phases at one charge, wrap-safe
        by_phase = cells.sort_values(channel + ["Calib", "phase_strobe"])
        group = by_phase.groupby(channel + ["Calib"], dropna=False)
        slope = wrapped(group.toa_mean.diff()) / group.phase_strobe.diff()
        steps = by_phase.assign(slope=slope).groupby(channel, dropna=False).slope.median()
        # timewalk: smallest firing charge minus largest, at each phase
        by_charge = cells.sort_values(channel + ["phase_strobe", "Calib"]).groupby(
            channel + ["phase_strobe"], dropna=False)
        ends = by_charge.agg(first=("toa_mean", "first"), last=("toa_mean", "last"),
                             low=("Calib", "first"), high=("Calib", "last"), n=("Calib", "nunique"))
        ends = ends[ends.n > 1]
        walks = ends.assign(walk=wrapped(ends["first"] - ends["last"])).groupby(channel, dropna=False)
        counts = cells.groupby(channel, dropna=False).agg(n_phases=("phase_strobe", "nunique"),
                                                          n_charges=("Calib", "nunique"))
        every = rows[channel].drop_duplicates().set_index(channel).index
        summary = pd.DataFrame(index=every).join(steps.rename("toa_per_phase_step")) \
            .join(walks.walk.median().rename("timewalk_lsb")) \
            .join(walks.low.median().rename("calib_low")).join(walks.high.median().rename("calib_high")) \
            .join(counts).reset_index()
        summary[["n_phases", "n_charges"]] = summary[["n_phases", "n_charges"]].fillna(0).astype(int)
        summary["n_left_out"] = n_left_out
        summary["flag"] = np.where(summary.n_charges == 0, "no firing points",
                                   np.where(n_left_out > 0, "mislabelled points left out", "ok"))
        return summary.sort_values(channel).reset_index(drop=True)

    def _by(self, cells, chips, x, series, y, ylabel, xlabel):
        """y versus x per chip: one line per value of `series`, over the first injected channel."""
        shown = cells[series].nunique()
        which = f"one line per {series}" if shown <= MAX_LINES else \
            f"{MAX_LINES} of its {shown} values of {series}, evenly spaced"
        fig, panels = chip_panels(chips, f"{ylabel.split(' (')[0]} versus {x}, first injected "
                                  f"channel of each chip, {which}")
        for chip, ax in panels.items():
            rows = cells[(cells.chip == chip) & (cells.channeltype == 0)]
            if rows.empty:
                no_data(ax, "no data" if y != "toa_mean" else "no TOA in this chip's data")
                continue
            channel = rows.channel.min()
            rows = rows[rows.channel == channel]
            values = some(sorted(rows[series].unique()))
            reference = None
            for color, value in zip(channel_colors(len(values)), values):
                g = rows[rows[series] == value].sort_values(x)
                ys = g[y].to_numpy(float)
                if y == "toa_mean":  # one reference for all lines: none sits 1024 below the others
                    reference = ys[0] if reference is None else reference
                    ys = unwrap_from(reference, ys)
                ax.plot(g[x], ys, "o-", ms=3, lw=1, color=color, label=f"{series} {describe([series], (value,)).split(' ', 1)[1]}")
            ax.set_xlabel(xlabel)
            ax.set_title(f"chip {chip}, channel {channel}", fontsize=11)
        panels[min(panels)].set_ylabel(ylabel)
        if any(ax.get_legend_handles_labels()[0] for ax in panels.values()):
            ax = next(a for a in reversed(list(panels.values())) if a.get_legend_handles_labels()[0])
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
        return fig


DISTILLERY = Timewalk
