"""TOA versus sampling phase and versus charge; the pulse shape through the phase.

For each injected channel and each charge at which TOA fires in most events,
TOA is read against `phase_strobe`; the shift per phase step is the median of
the slopes between consecutive phase settings (TOA unwrapped across its
1024 wrap), which one mislabelled phase cannot bias. The timewalk is TOA at
the smallest firing charge minus TOA at the largest, the median over phases.

Summary columns: chip, channeltype, channel, toa_per_phase_step,
timewalk_lsb, n_phases, n_charges.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .common import Distillery, channel_colors, chip_panels, injected_rows

WRAP = 1024


def wrapped(d):
    """A TOA difference brought into [-512, 512)."""
    return (np.asarray(d) + WRAP / 2) % WRAP - WRAP / 2


class Timewalk(Distillery):
    defaults = {"injected_channels": None, "min_efficiency": 0.9}
    plots = ("toa_vs_phase", "toa_vs_charge", "adc_vs_phase")

    def analyse(self, data):
        p = self.parameters
        for column in ("phase_strobe", "Calib"):
            if column not in data:
                raise ValueError(f"the dataset has no {column} column")
        rows = data[injected_rows(data, p["injected_channels"])]
        firing = rows[rows.toa_efficiency >= p["min_efficiency"]]
        if firing.empty:
            raise ValueError("TOA never fires on the injected channels")
        cells = firing.groupby(["chip", "channeltype", "channel", "Calib", "phase_strobe"],
                               as_index=False).toa_mean.mean()
        out = []
        for key, g in cells.groupby(["chip", "channeltype", "channel"]):
            slopes = []
            for _, c in g.groupby("Calib"):
                c = c.sort_values("phase_strobe")
                if len(c) > 1:
                    slopes += list(wrapped(np.diff(c.toa_mean)) / np.diff(c.phase_strobe))
            walks = []
            for _, c in g.groupby("phase_strobe"):
                if c.Calib.nunique() > 1:
                    c = c.sort_values("Calib")
                    walks.append(float(wrapped(c.toa_mean.iloc[0] - c.toa_mean.iloc[-1])))
            out.append((*key, float(np.median(slopes)) if slopes else math.nan,
                        float(np.median(walks)) if walks else math.nan,
                        g.phase_strobe.nunique(), g.Calib.nunique()))
        summary = pd.DataFrame(out, columns=["chip", "channeltype", "channel", "toa_per_phase_step",
                                             "timewalk_lsb", "n_phases", "n_charges"])
        return summary, {"toa_vs_phase": lambda: self._by(cells, "phase_strobe", "Calib", "toa_mean",
                                                          "TOA (LSB, 25 ns / 1024)", "phase_strobe (1.5625 ns steps)"),
                         "toa_vs_charge": lambda: self._by(cells, "Calib", "phase_strobe", "toa_mean",
                                                           "TOA (LSB, 25 ns / 1024)", "Calib (DAC steps)"),
                         "adc_vs_phase": lambda: self._by(rows.groupby(["chip", "channeltype", "channel", "Calib",
                                                                        "phase_strobe"], as_index=False).adc_mean.mean(),
                                                          "phase_strobe", "Calib", "adc_mean", "ADC (counts)",
                                                          "phase_strobe (1.5625 ns steps)")}, None

    def _by(self, cells, x, series, y, ylabel, xlabel):
        """y versus x per chip: one line per value of `series`, over the first injected channel."""
        fig, panels = chip_panels(cells.chip.unique(), f"{ylabel.split(' (')[0]} versus {x}, first injected "
                                  f"channel of each chip, one line per {series}")
        for chip, ax in panels.items():
            rows = cells[(cells.chip == chip) & (cells.channeltype == 0)]
            if rows.empty:
                continue
            channel = rows.channel.min()
            rows = rows[rows.channel == channel]
            values = sorted(rows[series].unique())
            for color, value in zip(channel_colors(len(values)), values):
                g = rows[rows[series] == value].sort_values(x)
                ys = g[y].to_numpy(float)
                if y == "toa_mean":  # unwrap so a line does not jump by 1024
                    ys = ys[0] + np.concatenate([[0], np.cumsum(wrapped(np.diff(ys)))]) if len(ys) else ys
                ax.plot(g[x], ys, "o-", ms=3, lw=1, color=color, label=f"{series} {value}")
            ax.set_xlabel(xlabel)
            ax.set_title(f"chip {chip}, channel {channel}", fontsize=11)
        panels[min(panels)].set_ylabel(ylabel)
        panels[max(panels)].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
        return fig


DISTILLERY = Timewalk
