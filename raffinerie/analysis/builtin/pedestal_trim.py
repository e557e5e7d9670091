"""Per-channel `trim_inv` values that align the pedestals of each half.

Input: a scan of `trim_inv` (the dataset's `trim_inv` column is the value each
channel had). Each channel's pedestal is fitted as a straight line in
`trim_inv`; the target of a half is the parameter `target` (ADC) when given, as
the tuning chain gives the level `vref` aimed at, or else the highest pedestal
every channel of the half can reach (or, if there is none, the median of the
channels' reachable ranges), and each channel gets the trim closest to it. The
calibration is a target-config overlay with those `trim_inv` values.

A channel whose fitted range over trims 0..max_trim does not hold the target is
FLAGGED `unreachable` (and named in a note): it gets the end trim nearest the
target, the closest it can come, and its `residual` says how far that is. A
channel without a fit (fewer than two trims measured) is flagged `no fit` and
gets no trim; one whose trim_inv the scan did not move (the calibration channels
of a scan of `ch` only) is `not scanned` and keeps its trim.

Summary columns: chip, channeltype, channel, half, slope, intercept,
trim_inv, target, predicted_pedestal, residual, status.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .common import Distillery, board_hexmap, chip_panels, linear_fit


class PedestalTrim(Distillery):
    defaults = {"max_trim": 63, "target": None}
    plots = ("trim_hexmap", "trim_scan", "trimmed_pedestals")   # the map first, as the report shows it
    calibrates = True

    def analyse(self, data):
        if "trim_inv" not in data or data["trim_inv"].nunique() < 2:
            raise ValueError("the dataset has no trim_inv scan (a trim_inv column with 2 or more values)")
        rows = data[data.channeltype != 100]
        top = self.parameters["max_trim"]
        fits = []
        for (chip, kind, channel), g in rows.groupby(["chip", "channeltype", "channel"]):
            slope, intercept = linear_fit(g.trim_inv, g.adc_mean)
            fits.append((chip, kind, channel, int(g.half.iloc[0]), slope, intercept, g.trim_inv.nunique() > 1))
        s = pd.DataFrame(fits, columns=["chip", "channeltype", "channel", "half", "slope", "intercept", "scanned"])
        ends = np.stack([s.intercept, s.intercept + s.slope * top])
        s["low"], s["high"] = ends.min(axis=0), ends.max(axis=0)
        targets = {}
        for (chip, half), g in s.groupby(["chip", "half"]):
            if self.parameters["target"] is not None:
                targets[(chip, half)] = float(self.parameters["target"])
                continue
            ok = g.dropna()
            best = ok.low.max() if len(ok) else np.nan
            if len(ok) and best > ok.high.min():  # no common level: aim at the middle
                best = float(np.median((ok.low + ok.high) / 2))
            targets[(chip, half)] = best
        s["target"] = [targets[(c, h)] for c, h in zip(s.chip, s.half)]
        with np.errstate(invalid="ignore", divide="ignore"):
            trim = np.rint((s.target - s.intercept) / s.slope)
        s["trim_inv"] = np.clip(np.nan_to_num(trim, nan=0), 0, top).astype(int)
        s["predicted_pedestal"] = s.intercept + s.slope * s.trim_inv
        s["residual"] = s.predicted_pedestal - s.target
        fitted = s.slope.notna() & s.intercept.notna()
        s["status"] = np.where(~s.scanned, "not scanned", np.where(~fitted, "no fit", np.where((s.target < s.low - 0.5 * s.slope.abs())
                                                           | (s.target > s.high + 0.5 * s.slope.abs()),
                                                           "unreachable", "ok")))
        self._note(s)
        calibration: dict = {}
        for r in s[fitted & s.scanned].itertuples():
            block = "ch" if r.channeltype == 0 else "calib"
            calibration.setdefault(f"roc_s{r.chip}", {}).setdefault(block, {})[int(r.channel)] = \
                {"trim_inv": int(r.trim_inv)}
        summary = s.drop(columns=["low", "high", "scanned"])
        chips = data.chip.unique()
        figures = {"trim_hexmap": board_hexmap(s, "trim_inv", "chosen trim_inv", "DAC", chips=chips),
                   "trim_scan": lambda: self._scan_plot(rows, s),
                   "trimmed_pedestals": lambda: self._result(s)}
        return summary, figures, calibration

    def _note(self, s) -> None:
        for status, what in (("unreachable", "no trim reaches the target: given the nearest end trim"),
                             ("no fit", "fewer than two trims measured: no trim written"),
                             ("not scanned", "the scan left their trim_inv alone: left as they are")):
            bad = s[s.status == status]
            if len(bad):
                names = ", ".join(f"roc_s{r.chip} {'ch' if r.channeltype == 0 else 'calib'} {r.channel}"
                                  + (f" ({r.residual:+.0f} ADC)" if status == "unreachable" else "")
                                  for r in bad.itertuples())
                self.notes.append(f"{len(bad)} channel{'s' * (len(bad) != 1)} {status}, {what}: {names}")

    def _scan_plot(self, rows, s):
        """Measured pedestals (points) and each channel's straight-line fit, coloured by channel."""
        import matplotlib
        import matplotlib.cm
        import matplotlib.collections
        import matplotlib.colors
        from matplotlib.lines import Line2D

        fig, panels = chip_panels(rows.chip.unique(), "pedestal versus trim_inv: measured (points) "
                                  "and each channel's straight-line fit (lines)")
        cmap, norm = matplotlib.colormaps["viridis"], matplotlib.colors.Normalize(0, 71)
        for chip, ax in panels.items():
            mine = rows[(rows.chip == chip) & (rows.channeltype == 0)]
            points = mine.groupby(["channel", "trim_inv"], as_index=False).adc_mean.mean()
            # one scatter for all channels, not a call per channel
            ax.scatter(points.trim_inv, points.adc_mean, c=points.channel, cmap=cmap, norm=norm, s=12,
                       edgecolors="black", linewidths=0.3, zorder=3)
            fits = s[(s.chip == chip) & (s.channeltype == 0)].dropna(subset=["slope", "intercept"])
            lo, hi = mine.trim_inv.min(), mine.trim_inv.max()
            ends = np.array([lo, hi], float)
            segments = np.stack([np.broadcast_to(ends, (len(fits), 2)),
                                 fits.intercept.to_numpy()[:, None] + fits.slope.to_numpy()[:, None] * ends], axis=2)
            ax.add_collection(matplotlib.collections.LineCollection(
                segments, array=fits.channel.to_numpy(float), cmap=cmap, norm=norm, lw=0.8, alpha=0.7))
            ax.set_xlabel("trim_inv (DAC steps)")
        panels[min(panels)].set_ylabel("pedestal (ADC counts)")
        panels[min(panels)].legend(handles=[
            Line2D([], [], ls="none", marker="o", mfc="grey", mec="black", mew=0.3, ms=4, label="measured"),
            Line2D([], [], color="grey", lw=0.8, label="straight-line fit")], fontsize=8, loc="upper right")
        fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=list(panels.values()),
                     label="channel", pad=0.01, aspect=30)
        return fig

    def _result(self, s):
        fig, panels = chip_panels(s.chip.unique(), "pedestals before and after trimming")
        for chip, ax in panels.items():
            rows = s[(s.chip == chip) & (s.channeltype == 0)]
            ax.plot(rows.channel, rows.intercept, "o", ms=3, color="tab:grey", label="trim_inv 0")
            ax.plot(rows.channel, rows.predicted_pedestal, "o", ms=3, color="tab:green", label="trimmed (fit)")
            for half in (0, 1):
                target = rows[rows.half == half].target
                if len(target):
                    ax.hlines(target.iloc[0], 36 * half - 0.5, 36 * half + 35.5, color="tab:red", lw=1,
                              label="target" if half == 0 else None)
            ax.set_xlabel("channel")
        panels[min(panels)].set_ylabel("pedestal (ADC counts)")
        panels[min(panels)].legend(fontsize=8)
        return fig


DISTILLERY = PedestalTrim
