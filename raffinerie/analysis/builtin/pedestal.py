"""Pedestal and noise of every channel; dead and noisy channels flagged.

Summary columns: chip, channeltype, channel, half, pedestal, noise, n_points,
flag (`ok`, `dead` or `noisy`). A channel is dead when its noise is below
`dead_threshold` ADC (a stuck output) or its pedestal sits at 0 or 1023; it
is noisy when its noise exceeds `noisy_threshold` ADC (common-mode channels:
`cm_noisy_threshold`).
"""

from __future__ import annotations

import numpy as np

from .common import Distillery, chip_panels


class Pedestal(Distillery):
    defaults = {"noisy_threshold": 2.5, "cm_noisy_threshold": 4.0, "dead_threshold": 0.2}
    plots = ("pedestal", "noise")

    def analyse(self, data):
        p = self.parameters
        summary = (data.groupby(["chip", "channeltype", "channel"], as_index=False)
                   .agg(half=("half", "first"), pedestal=("adc_mean", "mean"),
                        noise=("adc_stdd", "mean"), n_points=("adc_mean", "size")))
        noisy_limit = np.where(summary.channeltype == 100, p["cm_noisy_threshold"], p["noisy_threshold"])
        dead = (summary.noise < p["dead_threshold"]) | (summary.pedestal <= 0.5) | (summary.pedestal >= 1022.5)
        summary["flag"] = np.where(dead, "dead", np.where(summary.noise > noisy_limit, "noisy", "ok"))
        return summary, {"pedestal": lambda: self._plot(summary, "pedestal", "pedestal (ADC counts)"),
                         "noise": lambda: self._plot(summary, "noise", "noise: event-to-event std (ADC counts)")}, None

    def _plot(self, s, column, label):
        fig, panels = chip_panels(s.chip.unique(), f"{label} per channel")
        for chip, ax in panels.items():
            rows = s[(s.chip == chip) & (s.channeltype == 0)]
            err = rows.noise if column == "pedestal" else None
            ax.errorbar(rows.channel, rows[column], yerr=err, fmt="o", ms=3, lw=0.8,
                        color="tab:blue", label="channels")
            calib = s[(s.chip == chip) & (s.channeltype == 1)]
            ax.plot(calib.channel * 36 + 17.5, calib[column], "s", color="tab:orange", ms=5,
                    label="calibration channels")
            bad = rows[rows.flag != "ok"]
            ax.plot(bad.channel, bad[column], "x", color="red", ms=9, mew=2, label="flagged")
            ax.axvline(35.5, color="grey", lw=0.8, ls="--")
            ax.set_xlabel("channel (half 0 | half 1)")
            ax.set_xlim(-2, 74)
        panels[min(panels)].set_ylabel(label)
        panels[min(panels)].legend(fontsize=8, loc="best")
        if column == "noise":
            for ax in panels.values():
                ax.axhline(self.parameters["noisy_threshold"], color="red", lw=0.8, ls=":")
        return fig


DISTILLERY = Pedestal
