"""Pedestal and noise of every channel; dead and noisy channels flagged.

Only points without injection count: a point where the channel's half
injects charge (Calib x IntCtest > 0 with a HighRange or LowRange channel in
that half) measures the pulse or its crosstalk, not the pedestal, so over a
whole injection or timewalk campaign the injected channels would sit at
saturation and look dead. Points that contradict their label (labelled "no
injection", but firing) are left out as well. A channel with no point left
gets flag `no pedestal point` and NaN values.

Summary columns: chip, channeltype, channel, half, pedestal, noise, n_points
(the points used), flag (`ok`, `dead`, `noisy` or `no pedestal point`). A
channel is dead when its noise is below `dead_threshold` ADC (a stuck output)
or its pedestal sits at 0 or 1023; it is noisy when its noise exceeds
`noisy_threshold` ADC (common-mode channels: `cm_noisy_threshold`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from raffinerie.qc import CellFlag

from .common import (CHANNEL, Distillery, board_hexmap, chip_panels, injected_charge, injected_rows,
                     mislabelled_points, no_data)


def quiet_rows(data: pd.DataFrame) -> pd.Series:
    """Rows of points in which nothing is injected into the row's chip half."""
    charge = injected_charge(data) * injected_rows(data)
    if "point" not in data:
        return charge == 0
    injecting = charge.groupby([data.point, data.chip, data.half]).transform("max")
    return injecting == 0


class Pedestal(Distillery):
    defaults = {"noisy_threshold": 2.5, "cm_noisy_threshold": 4.0, "dead_threshold": 0.2}
    plots = ("pedestal_hexmap", "noise_hexmap", "pedestal", "noise")   # the maps first, as in the report

    def analyse(self, data):
        p = self.parameters
        check = mislabelled_points(data, self.notes)
        clean = check.drop(data)
        quiet = clean[quiet_rows(clean)]
        if len(quiet) < len(clean):
            self.notes.append(f"{clean.point.nunique() - quiet.point.nunique() if 'point' in clean else 'some'} "
                              "points inject charge and are left out of the pedestals"
                              + (f"; {quiet.point.nunique()} points without injection used" if 'point' in quiet
                                 else ""))
        channels = data.groupby(CHANNEL, as_index=False).agg(half=("half", "first"))
        measured = quiet.groupby(CHANNEL, as_index=False).agg(pedestal=("adc_mean", "mean"),
                                                                noise=("adc_stdd", "mean"),
                                                                n_points=("adc_mean", "size"))
        summary = channels.merge(measured, on=CHANNEL, how="left")
        summary["n_points"] = summary.n_points.fillna(0).astype(int)
        noisy_limit = np.where(summary.channeltype == 100, p["cm_noisy_threshold"], p["noisy_threshold"])
        dead = (summary.noise < p["dead_threshold"]) | (summary.pedestal <= 0.5) | (summary.pedestal >= 1022.5)
        summary["flag"] = np.select([summary.n_points == 0, dead, summary.noise > noisy_limit],
                                    ["no pedestal point", "dead", "noisy"], "ok")
        missing = summary[summary.n_points == 0]
        if len(missing):
            self.notes.append(f"{len(missing)} channels have no point without injection: no pedestal for them")
        bad = {"dead": CellFlag.DEAD, "noisy": CellFlag.NOISY}
        return summary, {"pedestal_hexmap": board_hexmap(summary, "pedestal", "pedestal", "ADC", bad=bad),
                         "noise_hexmap": board_hexmap(summary, "noise", "noise", "ADC", bad=bad),
                         "pedestal": lambda: self._plot(summary, "pedestal", "pedestal (ADC counts)"),
                         "noise": lambda: self._plot(summary, "noise", "noise: event-to-event std (ADC counts)")}, None

    def _plot(self, s, column, label):
        fig, panels = chip_panels(s.chip.unique(), f"{label} per channel")
        for chip, ax in panels.items():
            rows = s[(s.chip == chip) & (s.channeltype == 0)]
            if rows[column].isna().all():
                no_data(ax, "no data: no point without injection")
                continue
            err = rows.noise if column == "pedestal" else None
            ax.errorbar(rows.channel, rows[column], yerr=err, fmt="o", ms=3, lw=0.8,
                        color="tab:blue", label="channels")
            calib = s[(s.chip == chip) & (s.channeltype == 1)]
            ax.plot(calib.channel * 36 + 17.5, calib[column], "s", color="tab:orange", ms=5,
                    label="calibration channels")
            bad = rows[rows.flag.isin(["dead", "noisy"])]
            if len(bad):  # only a legend entry for something that is there
                ax.plot(bad.channel, bad[column], "x", color="red", ms=9, mew=2, label="flagged (dead or noisy)")
            if column == "noise":  # before the legend, so that it names the line
                limit = self.parameters["noisy_threshold"]
                ax.axhline(limit, color="red", lw=0.8, ls=":", label=f"noisy above {limit:g} ADC")
            ax.axvline(35.5, color="grey", lw=0.8, ls="--")
            ax.set_xlabel("channel (half 0 | half 1)")
            ax.set_xlim(-2, 74)
            ax.legend(fontsize=8, loc="best")
        panels[min(panels)].set_ylabel(label)
        return fig


DISTILLERY = Pedestal
