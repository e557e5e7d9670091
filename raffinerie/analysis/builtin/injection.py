"""ADC and TOT versus injected charge, per injected channel.

The injected charge of a row is Calib x 1.953 fC (HighRange) or x 0.122 fC
(LowRange) when IntCtest is on. Per channel: the gain (ADC counts per fC) from
a straight line through the points below saturation, the saturation charge
(first point at ADC >= `saturation_adc`), the TOT onset (first charge with TOT
in at least half the events) and the TOT slope above `tot_fit_from` x onset.

TOT statistics come from the dataset, which leaves the overflow code (raw
0x3FF, 4088) out of them and counts it in `tot_overflow`; the fit uses the
measured TOTs only. Points that contradict their label (labelled "no
injection", but firing) are left out. A scan axis other than Calib (e.g.
`phase_strobe` of a timewalk scan) is not modelled: each of its values is
analysed separately, with one summary row per channel and value (NaN: the
value is unknown), and the plots show one value, named in their title.

Summary columns: chip, channeltype, channel, [other scan axes], pedestal,
gain_adc_per_fc, saturation_fc, tot_onset_fc, tot_slope_per_fc,
tot_slope_per_calib, tot_overflow (overflow events over the channel's
points), n_points, n_left_out (points left out as mislabelled), flag (`ok`,
`mislabelled points left out`, `too few points` (under 3 charges), `no data`).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .common import CHANNEL, HIGH_RANGE_FC, LOW_RANGE_FC, Distillery, channel_colors, chip_panels, describe, \
    injected_charge, injected_rows, linear_fit, mislabelled_points, no_data, scan_axes, slices

COLUMNS = ["pedestal", "gain_adc_per_fc", "saturation_fc", "tot_onset_fc", "tot_slope_per_fc",
           "tot_slope_per_calib", "tot_overflow", "n_points"]


class Injection(Distillery):
    defaults = {"injected_channels": None, "saturation_adc": 1000, "tot_fit_from": 1.5}
    plots = ("adc_vs_charge", "tot_vs_charge")
    injected_only = True

    def analyse(self, data):
        p = self.parameters
        injected = injected_rows(data, p["injected_channels"])
        if not injected.any():
            raise ValueError("no injected channels (no HighRange/LowRange channel, no injected_channels)")
        check = mislabelled_points(data, self.notes, p["saturation_adc"], injected)
        rows = check.drop(data[injected])
        rows = rows.assign(charge=injected_charge(rows), fc_per_calib=_fc_per_calib(rows))
        extra = scan_axes(rows, ("Calib", "charge"))
        out = []
        for values, part in slices(rows, extra):
            for key, g in part.groupby(CHANNEL):
                out.append((*key, *values, *self._channel(g)))
        summary = pd.DataFrame(out, columns=CHANNEL + extra + COLUMNS)
        summary["n_left_out"] = len(check.points)
        summary["flag"] = np.select([summary.n_points == 0, summary.n_points < 3, summary.n_left_out > 0],
                                    ["no data", "too few points", "mislabelled points left out"], "ok")
        shown, title = self._shown(rows, extra)
        reach = 3 * summary.saturation_fc.median() if summary.saturation_fc.notna().any() else None
        chips = self.chips if self.chips is not None else data.chip.unique()
        return summary, {
            "adc_vs_charge": lambda: self._plot(shown, chips, "adc_mean", "ADC (counts)", title, reach),
            "tot_vs_charge": lambda: self._plot(shown[shown.tot_efficiency > 0], chips, "tot_median",
                                                "TOT, median of measured TOTs (counts)", title)}, None

    def _channel(self, g: pd.DataFrame) -> tuple:
        p = self.parameters
        overflow = int(g.tot_overflow.sum()) if "tot_overflow" in g else 0
        g = g.groupby("charge", as_index=False).mean(numeric_only=True).sort_values("charge")
        pedestal = float(g.adc_mean.iloc[0])
        linear = g[(g.adc_median < p["saturation_adc"]) & (g.charge > 0)]
        linear = pd.concat([g.iloc[:1], linear])
        gain, _ = linear_fit(linear.charge, linear.adc_mean)
        saturated = g[g.adc_median >= p["saturation_adc"]]
        saturation = float(saturated.charge.iloc[0]) if len(saturated) else math.nan
        firing = g[g.tot_efficiency >= 0.5]
        onset = float(firing.charge.iloc[0]) if len(firing) else math.nan
        above = g[(g.charge >= p["tot_fit_from"] * onset) & (g.tot_efficiency >= 0.95) & g.tot_median.notna()]
        slope, _ = linear_fit(above.charge, above.tot_median) if len(above) else (math.nan, 0)
        return pedestal, gain, saturation, onset, slope, slope * float(g.fc_per_calib.iloc[0]), overflow, len(g)

    @staticmethod
    def _shown(rows: pd.DataFrame, extra: list[str]) -> tuple[pd.DataFrame, str]:
        """The slice the plots show: the one with the most charges (a known value first)."""
        if not extra:
            return rows, ""
        parts = list(slices(rows, extra))
        known = [(v, r) for v, r in parts if not any(isinstance(x, float) and math.isnan(x) for x in v)]
        values, shown = max(known or parts, key=lambda vr: vr[1].Calib.nunique())
        others = "; ".join(describe(extra, v) for v, _ in parts)
        return shown, f"{describe(extra, values)} (slices: {others})"

    def _plot(self, rows, chips, column, label, title, reach=None):
        head = f"{label.split(',')[0].split(' (')[0]} versus injected charge"
        fig, panels = chip_panels(chips, head + (f"\n{title}" if title else ""))
        for chip, ax in panels.items():
            channels = rows[(rows.chip == chip) & rows[column].notna()].groupby(["channeltype", "channel"])
            if not len(channels):
                no_data(ax, "no data" if column == "adc_mean" else "no TOT in this chip's data")
                continue
            for color, ((kind, channel), g) in zip(channel_colors(len(channels)), channels):
                g = g.groupby("charge", as_index=False)[[column, "adc_median"]].mean().sort_values("charge")
                name = f"ch {channel}" if kind == 0 else f"calib {channel}"
                ax.plot(g.charge, g[column], "o", ms=3.5, color=color, label=name)
                x, y = _measured_segments(g.charge.to_numpy(float), g[column].to_numpy(float),
                                          g.adc_median.to_numpy(float) >= self.parameters["saturation_adc"])
                ax.plot(x, y, "-", lw=1, color=color)
            ax.set_xlabel("injected charge (fC)")
            if reach:  # the interesting part: up to a little beyond saturation
                ax.set_xlim(-0.02 * reach, reach)
        first = min(panels)
        panels[first].set_ylabel(label)
        if panels[first].get_legend_handles_labels()[0]:
            panels[first].legend(fontsize=7, ncol=2)
        return fig


def _measured_segments(x: np.ndarray, y: np.ndarray, saturated: np.ndarray):
    """Line data that joins neighbours only where the response between them is known.

    Between a point below saturation and one at saturation the ADC left its
    linear range somewhere unmeasured: a straight line there would draw a
    gain the scan never saw, so the line breaks (NaN) instead.
    """
    if len(x) < 2:
        return x, y
    breaks = np.flatnonzero(saturated[1:] != saturated[:-1]) + 1
    return np.insert(x, breaks, np.nan), np.insert(y, breaks, np.nan)


def _fc_per_calib(rows: pd.DataFrame) -> pd.Series:
    """Charge per Calib step of each row's capacitor: HighRange 1.953 fC, LowRange 0.122 fC."""
    high = rows["HighRange"] > 0 if "HighRange" in rows else pd.Series(True, index=rows.index)
    low = rows["LowRange"] > 0 if "LowRange" in rows else pd.Series(False, index=rows.index)
    return pd.Series(np.where(high, HIGH_RANGE_FC, 0.0) + np.where(low, LOW_RANGE_FC, 0.0),
                     index=rows.index).replace(0.0, HIGH_RANGE_FC)


DISTILLERY = Injection
