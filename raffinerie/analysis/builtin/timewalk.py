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

The plots show one injected channel per chip. TOA is drawn unwrapped by one
rule for every point (`unwrapped_toa`), as the axis says; lines that coincide
(e.g. ADC of charges that all saturate) are drawn as rings of decreasing size
and named in the title.

Summary columns: chip, channeltype, channel, [other scan axes],
toa_per_phase_step, timewalk_lsb, calib_low, calib_high (the charges the
timewalk compares), n_phases, n_charges, n_left_out (points left out as
mislabelled), flag (`ok`, `mislabelled points left out`, `no firing points`).
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd

from .common import CHANNEL, Distillery, chip_panels, describe, distinct_colors, injected_rows, \
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
                                             TOA_LABEL, "phase_strobe (1.5625 ns steps)"),
            "toa_vs_charge": lambda: self._by(cells, chips, "Calib", "phase_strobe", "toa_mean",
                                              TOA_LABEL, "Calib (DAC steps)"),
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
        from matplotlib.ticker import MaxNLocator

        toa = y == "toa_mean"
        fig, panels = chip_panels(chips, f"{ylabel.split(' (')[0]} versus {x}, first injected "
                                  f"channel of each chip, {which}")
        coincide = []
        for chip, ax in panels.items():
            rows = cells[(cells.chip == chip) & (cells.channeltype == 0)]
            if rows.empty:
                no_data(ax, "no data" if not toa else "no TOA in this chip's data")
                continue
            channel = rows.channel.min()
            rows = rows[rows.channel == channel]
            if toa:
                rows = rows.assign(toa_mean=unwrapped_toa(rows))
            values = some(sorted(rows[series].unique()))
            lines = [rows[rows[series] == value].sort_values(x) for value in values]
            same = _coinciding(lines, x, y, COINCIDE * max(np.ptp(rows[y].to_numpy(float)), 1.0))
            if same:
                coincide.append((chip, [values[i] for i in same], max(same.values()),
                                 min(lines[i][y].max() for i in same)))
            sizes = dict(zip(sorted(same), np.linspace(10, 3, len(same))))
            for i, (color, value, g) in enumerate(zip(distinct_colors(len(values)), values, lines)):
                # lines that coincide: open markers, largest first, and distinct dashes, so each stays
                # visible as a ring round the next
                ax.plot(g[x], g[y], ls=LINE_STYLES[i % len(LINE_STYLES)], marker=MARKERS[i % len(MARKERS)],
                        ms=sizes.get(i, 4), mfc="none" if i in sizes else color, lw=1, color=color,
                        label=f"{series} {describe([series], (value,)).split(' ', 1)[1]}")
            if toa and rows[y].max() >= WRAP:
                ax.axhline(WRAP, color="grey", lw=0.8, ls=":", label="raw TOA wraps to 0 here (1024 = 25 ns)")
            ax.set_xlabel(xlabel)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # DAC settings are whole numbers
            ax.set_title(f"chip {chip}, channel {channel}", fontsize=11)
        if coincide:
            fig.suptitle(fig.get_suptitle() + "\n" + _why_coincide(coincide, y, series), fontsize=11)
        panels[min(panels)].set_ylabel(ylabel)
        if any(ax.get_legend_handles_labels()[0] for ax in panels.values()):
            ax = next(a for a in reversed(list(panels.values())) if a.get_legend_handles_labels()[0])
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
        return fig


# The TOA TDC counts 1024 LSB per 25 ns bunch crossing (LSB 24.4 ps) and wraps modulo
# 1024; phase_strobe moves the sampling 16 steps per bunch crossing, so the arrival time
# moves 1024 / 16 = 64 LSB per step (64.3 measured, hgcroc-physics.md). The plots show
# TOA unwrapped by one rule (`unwrapped_toa`), and say so.
PHASE_STEPS = 16
LSB_PER_PHASE = WRAP / PHASE_STEPS
TOA_LABEL = "TOA (unwrapped, TDC counts; raw wraps at 1024)"
COINCIDE = 0.01   # lines closer than 1 % of the panel's range look like one line
SATURATED_ADC = 1000
MARKERS = "osD^v<>ph*Xd"
LINE_STYLES = ("-", "--", "-.", ":")


def unwrapped_toa(rows: pd.DataFrame) -> np.ndarray:
    """TOA of one channel's points, each raw value + 1024 k by the same rule.

    k is the whole number of wraps that brings a point nearest to where the pulse is
    expected at its phase: the earliest arrival (the largest charge at the lowest phase,
    a raw value in 0-1023) plus 64 LSB per phase step after it. Every point, at every
    phase and charge, follows this one rule (the timewalk, up to ~300 LSB later at
    threshold, stays well inside the 512 either side), so a charge's line climbs
    straight through the wrap and the phases' lines stack in phase order.
    """
    first = rows[rows.phase_strobe == rows.phase_strobe.min()]
    reference = first.loc[first.Calib.idxmax()]
    expected = reference.toa_mean + LSB_PER_PHASE * (rows.phase_strobe.to_numpy(float) - reference.phase_strobe)
    raw = rows.toa_mean.to_numpy(float)
    return raw + WRAP * np.round((expected - raw) / WRAP)


def _coinciding(lines, x, y, tolerance: float) -> dict:
    """{index: largest difference to a close partner} of the lines that lie on another line:
    at every x the two share, closer than `tolerance`."""
    tables = [g.set_index(x)[y] for g in lines]
    close: dict = {}
    for i, j in combinations(range(len(lines)), 2):
        both = pd.concat([tables[i], tables[j]], axis=1, join="inner").dropna()
        if len(both):
            gap = float((both.iloc[:, 0] - both.iloc[:, 1]).abs().max())
            if gap < tolerance:
                close[i], close[j] = max(close.get(i, 0.0), gap), max(close.get(j, 0.0), gap)
    return close


def _why_coincide(coincide, y, series) -> str:
    worst = max(gap for _, _, gap, _ in coincide)
    unit = " ADC" if y == "adc_mean" else ""
    shown = sorted({v for _, values, _, _ in coincide for v in values})
    which = (", ".join(describe([series], (v,)).split(" ", 1)[1] for v in shown) if len(shown) <= 6 else
             f"{describe([series], (shown[0],)).split(' ', 1)[1]} to {describe([series], (shown[-1],)).split(' ', 1)[1]}")
    text = (f"{series} {which}: the lines coincide (within {worst:.1f}{unit}) in chip "
            f"{', '.join(str(c) for c, *_ in coincide)}")
    if y == "adc_mean" and all(peak >= SATURATED_ADC for *_, peak in coincide):
        # a saturated pulse has one height and shape whatever the charge: its samples are the same
        text += f"; each saturates (peak ADC >= {SATURATED_ADC}): one saturated pulse shape"
    return text


DISTILLERY = Timewalk
