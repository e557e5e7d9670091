"""The reference voltage of each half that brings its median pedestal to a target.

Input: a scan of `ReferenceVoltage.[0,1].Inv_vref` (or, with `register: Noinv_vref`, of
`Noinv_vref`), as hexactrl-script's vrefinv_scan.py / vrefnoinv_scan.py take it: the
dataset's column of that name is each row's half's value. Per (chip, half), the median
over its live normal channels (noise above 0: a dead cell says nothing of its half) of the
pedestal (adc_mean) at each value; the linear region of that curve is where its local slope
is at least `min_slope_fraction` of the steepest one and the median lies inside
[`adc_low`, `adc_high`], so the saturating ends are left out. A straight line through the
`fit_points` points of the linear region nearest the target gives the value.

A half whose target lies outside its linear region, or that has fewer than two points in
it, is FLAGGED (`status`, and a note naming it) and gets no value: the base config's value
stays, rather than a value clipped to the register's end that would only look tuned.

Parameters: `target` (ADC, default 250: the middle of the 200-300 ADC that hexactrl's vref
scans aim the pedestals at),
`register` (Inv_vref), `min_slope_fraction` (0.5), `adc_low`/`adc_high` (20/1000: the ADC's
floor and the preamp's saturation), `fit_points` (3), `max_value` (1023: 10 bits).

Summary (one row per half): chip, half, register, slope, intercept, fit_low, fit_high,
value, predicted_median, target, residual, n_channels, status.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .common import Distillery, chip_panels, linear_fit

OK, OUT_OF_REACH, NO_LINEAR_REGION = "ok", "target out of reach", "no linear region"


class Vref(Distillery):
    defaults = {"target": 250.0, "register": "Inv_vref", "min_slope_fraction": 0.5, "adc_low": 20.0,
                "adc_high": 1000.0, "fit_points": 3, "max_value": 1023}
    plots = ("vref_scan", "pedestals_at_choice")
    calibrates = True

    def dataset_columns(self, dataset) -> list[str]:
        return list(dict.fromkeys(super().dataset_columns(dataset) + [self.parameters["register"]]))

    def analyse(self, data):
        reg = self.parameters["register"]
        if reg not in data or data[reg].nunique() < 3:
            raise ValueError(f"the dataset has no {reg} scan (a {reg} column with 3 or more values)")
        rows = data[(data.channeltype == 0) & (data.adc_stdd > 0)]
        curves = rows.groupby(["chip", "half", reg], as_index=False).agg(
            median=("adc_mean", "median"), n_channels=("channel", "nunique"))
        summary = pd.DataFrame([self._choose(chip, half, g.sort_values(reg))
                                for (chip, half), g in curves.groupby(["chip", "half"])])
        for r in summary[summary.status != OK].itertuples():
            self.notes.append(f"roc_s{r.chip} half {r.half}: {r.status} (target {r.target:g} ADC); "
                              f"no {reg} written, the base config's value stays")
        calibration: dict = {}
        for r in summary[summary.status == OK].itertuples():
            calibration.setdefault(f"roc_s{r.chip}", {}).setdefault("ReferenceVoltage", {})[int(r.half)] = \
                {reg: int(r.value)}
        figures = {"vref_scan": lambda: self._scan_plot(curves, summary),
                   "pedestals_at_choice": lambda: self._spread_plot(rows, summary)}
        return summary, figures, calibration

    def _choose(self, chip, half, g: pd.DataFrame) -> dict:
        p, reg = self.parameters, self.parameters["register"]
        x, y = g[reg].to_numpy(float), g["median"].to_numpy(float)
        row = {"chip": chip, "half": half, "register": reg, "slope": np.nan, "intercept": np.nan,
               "fit_low": np.nan, "fit_high": np.nan, "value": np.nan, "predicted_median": np.nan,
               "target": float(p["target"]), "residual": np.nan, "n_channels": int(g.n_channels.max()),
               "status": NO_LINEAR_REGION}
        linear = _linear_region(x, y, p["min_slope_fraction"], p["adc_low"], p["adc_high"])
        if linear.sum() < 2:
            return row
        xl, yl = x[linear], y[linear]
        if not yl.min() <= p["target"] <= yl.max():
            row["status"] = OUT_OF_REACH
            return row
        nearest = np.argsort(np.abs(yl - p["target"]))[:max(2, int(p["fit_points"]))]
        slope, intercept = linear_fit(xl[nearest], yl[nearest])
        value = int(np.clip(np.rint((p["target"] - intercept) / slope), 0, p["max_value"]))
        predicted = intercept + slope * value
        row.update(slope=slope, intercept=intercept, fit_low=xl[nearest].min(), fit_high=xl[nearest].max(),
                   value=value, predicted_median=predicted, residual=predicted - p["target"], status=OK)
        return row

    def _scan_plot(self, curves, summary):
        reg = self.parameters["register"]
        fig, panels = chip_panels(curves.chip.unique(), f"median pedestal of each half versus {reg}: "
                                  "the fitted region (line), the target and the value chosen")
        for chip, ax in panels.items():
            for half, color in ((0, "tab:blue"), (1, "tab:orange")):
                c = curves[(curves.chip == chip) & (curves.half == half)]
                ax.plot(c[reg], c["median"], "o-", ms=3, lw=0.8, color=color, label=f"half {half}")
                s = summary[(summary.chip == chip) & (summary.half == half)]
                if len(s) and s.status.iloc[0] == OK:
                    r = s.iloc[0]
                    xs = np.array([r.fit_low, r.fit_high])
                    ax.plot(xs, r.intercept + r.slope * xs, color="black", lw=2)
                    ax.plot([r.value], [r.predicted_median], "*", ms=12, color=color, mec="black")
            ax.axhline(self.parameters["target"], color="tab:red", lw=1, ls="--", label="target")
            ax.set_xlabel(f"{reg} (DAC steps)")
            ax.legend(fontsize=8)
        panels[min(panels)].set_ylabel("median pedestal (ADC counts)")
        return fig

    def _spread_plot(self, rows, summary):
        """Each channel's pedestal at the scan point nearest the chosen value, against the target."""
        reg = self.parameters["register"]
        fig, panels = chip_panels(rows.chip.unique(), f"pedestals at the scanned {reg} nearest the value "
                                  "chosen, per channel (the trims then align them)")
        for chip, ax in panels.items():
            for half, color in ((0, "tab:blue"), (1, "tab:orange")):
                s = summary[(summary.chip == chip) & (summary.half == half) & (summary.status == OK)]
                mine = rows[(rows.chip == chip) & (rows.half == half)]
                if not len(s) or mine.empty:
                    continue
                values = np.sort(mine[reg].unique())
                at = values[np.argmin(np.abs(values - s.value.iloc[0]))]
                near = mine[mine[reg] == at].groupby("channel").adc_mean.mean()
                ax.plot(near.index, near.to_numpy(), "o", ms=3, color=color,
                        label=f"half {half} at {reg} {at:g}: spread {near.std():.1f} ADC")
            ax.axhline(self.parameters["target"], color="tab:red", lw=1, ls="--", label="target")
            ax.set_xlabel("channel")
            ax.legend(fontsize=7)
        panels[min(panels)].set_ylabel("pedestal (ADC counts)")
        return fig


def _linear_region(x: np.ndarray, y: np.ndarray, fraction: float, low: float, high: float) -> np.ndarray:
    """The points whose curve is steep (local slope, from both neighbours, at least `fraction` of the
    steepest) and inside [low, high]: the middle of the curve, not its saturating ends."""
    if len(x) < 2:
        return np.zeros(len(x), bool)
    local = np.abs(np.gradient(y, x))
    return (local >= fraction * np.nanmax(local)) & (y >= low) & (y <= high)


DISTILLERY = Vref
