"""ADC and TOT versus injected charge, per injected channel.

The injected charge of a row is Calib x 1.953 fC (HighRange) or x 0.122 fC
(LowRange) when IntCtest is on. Per channel: the gain (ADC counts per fC) from
a straight line through the points below saturation, the saturation charge
(first point at ADC >= `saturation_adc`), the TOT onset (first charge with TOT
in at least half the events) and the TOT slope above `tot_fit_from` x onset.

Summary columns: chip, channeltype, channel, pedestal, gain_adc_per_fc,
saturation_fc, tot_onset_fc, tot_slope_per_fc, tot_slope_per_calib.
"""

from __future__ import annotations

import math

import pandas as pd

from .common import HIGH_RANGE_FC, Distillery, channel_colors, chip_panels, injected_charge, \
    injected_rows, linear_fit


class Injection(Distillery):
    defaults = {"injected_channels": None, "saturation_adc": 1000, "tot_fit_from": 1.5}
    plots = ("adc_vs_charge", "tot_vs_charge")

    def analyse(self, data):
        p = self.parameters
        data = data.assign(charge=injected_charge(data))
        rows = data[injected_rows(data, p["injected_channels"])]
        if rows.empty:
            raise ValueError("no injected channels (no HighRange/LowRange channel, no injected_channels)")
        out = []
        for (chip, kind, channel), g in rows.groupby(["chip", "channeltype", "channel"]):
            g = g.groupby("charge", as_index=False).mean(numeric_only=True).sort_values("charge")
            pedestal = float(g.adc_mean.iloc[0])
            linear = g[(g.adc_median < p["saturation_adc"]) & (g.charge > 0)]
            linear = pd.concat([g.iloc[:1], linear])
            gain, _ = linear_fit(linear.charge, linear.adc_mean)
            saturated = g[g.adc_median >= p["saturation_adc"]]
            saturation = float(saturated.charge.iloc[0]) if len(saturated) else math.nan
            firing = g[g.tot_efficiency >= 0.5]
            onset = float(firing.charge.iloc[0]) if len(firing) else math.nan
            above = g[(g.charge >= p["tot_fit_from"] * onset) & (g.tot_efficiency >= 0.95)]
            slope, _ = linear_fit(above.charge, above.tot_median) if len(above) else (math.nan, 0)
            out.append((chip, kind, channel, pedestal, gain, saturation, onset, slope))
        summary = pd.DataFrame(out, columns=["chip", "channeltype", "channel", "pedestal", "gain_adc_per_fc",
                                             "saturation_fc", "tot_onset_fc", "tot_slope_per_fc"])
        summary["tot_slope_per_calib"] = summary.tot_slope_per_fc * HIGH_RANGE_FC
        reach = 3 * summary.saturation_fc.median() if summary.saturation_fc.notna().any() else None
        return summary, {"adc_vs_charge": lambda: self._plot(rows, "adc_mean", "ADC (counts)", reach),
                         "tot_vs_charge": lambda: self._plot(rows[rows.tot_efficiency > 0], "tot_median",
                                                             "TOT, median of firing events (counts)")}, None

    def _plot(self, rows, column, label, reach=None):
        fig, panels = chip_panels(rows.chip.unique(), f"{label.split(',')[0].split(' (')[0]} versus injected charge")
        for chip, ax in panels.items():
            channels = rows[rows.chip == chip].groupby(["channeltype", "channel"])
            for color, ((kind, channel), g) in zip(channel_colors(len(channels)), channels):
                g = g.groupby("charge", as_index=False)[column].mean().sort_values("charge")
                name = f"ch {channel}" if kind == 0 else f"calib {channel}"
                ax.plot(g.charge, g[column], "o-", ms=3, lw=1, color=color, label=name)
            ax.set_xlabel("injected charge (fC)")
            if reach:  # the interesting part: up to a little beyond saturation
                ax.set_xlim(-0.02 * reach, reach)
        panels[min(panels)].set_ylabel(label)
        panels[min(panels)].legend(fontsize=7, ncol=2)
        return fig


DISTILLERY = Injection
