"""S-curves: TOA (or TOT) efficiency versus a scanned parameter, with an error-function fit.

For every channel whose efficiency goes from below 10 % to above 90 % over the
scan, fits eff(x) = 1/2 [1 + erf((x - threshold) / (sqrt(2) width))] (or the
falling version when the efficiency falls with x, as for Toa_vref) by
Gauss-Newton, started from where the efficiency crosses 50 %.

A fit is only made, and only `ok`, when at least two points lie inside the
transition (10-90 % efficiency): with fewer, any threshold and width would
come from the fit's starting values, not from the data. Such a channel has
status `unresolved`, no threshold or width, and the interval that brackets
its transition (the last point below it and the first point above it); the
plot shows that interval instead of a curve. Points that contradict their
label (labelled "no injection", but firing) are left out. A scan axis other
than `scan` (e.g. `phase_strobe`) is analysed value by value.

Summary columns: chip, channeltype, channel, [other scan axes], threshold,
width, rising, fit_ok, n_points, n_transition (points inside 10-90 %),
bracket_low, bracket_high (the scan values around the transition), status
(`fit`, `fit failed`, `unresolved`, `fires below the scan`). `scan` names
the x column (default: the first of Calib, Toa_vref, Tot_vref that varies);
`measure` is `toa` or `tot`.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .common import CHANNEL, Distillery, Status, chip_panels, describe, distinct_colors, legend_outside, \
    mislabelled_points, no_data, scan_axes, slices

LOW, HIGH = 0.1, 0.9   # the transition: between 10 % and 90 % efficiency


def erf(x):
    sign = np.sign(x)
    x = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * x)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-x * x))


def model(x, mu, sigma, rising):
    z = (x - mu) / (math.sqrt(2) * sigma)
    return 0.5 * (1 + (erf(z) if rising else -erf(z)))


def fit(x: np.ndarray, eff: np.ndarray, rising: bool) -> tuple[float, float, bool]:
    """(threshold, width, converged) by Gauss-Newton on (mu, log sigma)."""
    order = np.argsort(x)
    x, eff = x[order], eff[order]
    cross = np.flatnonzero((eff >= 0.5) if rising else (eff <= 0.5))
    mu = float(x[cross[0]]) if len(cross) else float(np.median(x))
    span = np.diff(np.unique(x))
    log_sigma = math.log(max(float(np.median(span)) if len(span) else 1.0, 1e-3))
    for _ in range(50):
        sigma = math.exp(log_sigma)
        r = eff - model(x, mu, sigma, rising)
        h = 1e-4
        j_mu = (model(x, mu + h, sigma, rising) - model(x, mu - h, sigma, rising)) / (2 * h)
        j_ls = (model(x, mu, math.exp(log_sigma + h), rising)
                - model(x, mu, math.exp(log_sigma - h), rising)) / (2 * h)
        jac = np.stack([j_mu, j_ls], axis=1)
        step, *_ = np.linalg.lstsq(jac, r, rcond=None)
        mu += float(step[0])
        log_sigma = float(np.clip(log_sigma + step[1], -8, 8))
        if abs(step[0]) < 1e-6 and abs(step[1]) < 1e-6:
            return mu, math.exp(log_sigma), True
    return mu, math.exp(log_sigma), bool(np.abs(r).max() < 0.2)


class SCurve(Distillery):
    defaults = {"scan": None, "measure": "toa"}
    plots = ("scurves", "thresholds")

    def analyse(self, data):
        x_col = self.parameters["scan"] or next(
            (c for c in ("Calib", "Toa_vref", "Tot_vref") if c in data and data[c].nunique() > 1), None)
        if x_col is None or x_col not in data:
            raise ValueError("no scanned column to fit against (set `scan`)")
        eff_col = f"{self.parameters['measure']}_efficiency"
        check = mislabelled_points(data, self.notes)
        rows = check.drop(data[data.channeltype != 100])
        extra = scan_axes(rows, (x_col,))
        curves = rows.groupby(CHANNEL + extra + [x_col], as_index=False, dropna=False)[eff_col].mean()
        out, fitted = [], {}
        for values, part in slices(curves, extra):
            for key, g in part.groupby(CHANNEL):
                row, model_args = self._channel(g[x_col].to_numpy(float), g[eff_col].to_numpy(float))
                if row is not None:
                    out.append((*key, *values, *row))
                if model_args is not None:
                    fitted[(*key, *values)] = model_args
        summary = pd.DataFrame(out, columns=CHANNEL + extra + [
            "threshold", "width", "rising", "fit_ok", "n_points", "n_transition", "bracket_low",
            "bracket_high", "status"])
        summary["n_left_out"] = len(check.points)
        if summary.empty:
            raise ValueError(f"no channel's {eff_col} reaches 90 % in this scan")
        unresolved = summary[summary.status == str(Status.UNRESOLVED)]
        if len(unresolved):
            self.notes.append(f"{len(unresolved)} of {len(summary)} S-curves are unresolved: the turn-on lies "
                              f"between two scan points (e.g. {x_col} {unresolved.bracket_low.iloc[0]:g} to "
                              f"{unresolved.bracket_high.iloc[0]:g}); scan finer there to fit them")
        shown, title = _shown(curves, summary, extra)
        chips = data.chip.unique()
        return summary, {"scurves": lambda: self._curves(shown, summary, fitted, chips, extra, x_col, eff_col,
                                                         title),
                         "thresholds": lambda: self._thresholds(
                             summary.merge(shown[CHANNEL + extra].drop_duplicates(), on=CHANNEL + extra),
                             chips, extra, x_col, title)}, None

    @staticmethod
    def _channel(x: np.ndarray, eff: np.ndarray):
        """(summary values, fitted model arguments or None) of one curve; (None, None) if it never fires."""
        order = np.argsort(x)
        x, eff = x[order], eff[order]
        if eff.max() < HIGH:
            return None, None  # never efficient: not injected
        if eff.min() > LOW:
            return (math.nan, math.nan, True, False, len(x), 0, math.nan, x[0], str(Status.BELOW_SCAN)), None
        rising = bool(np.corrcoef(x, eff)[0, 1] > 0) if len(x) > 1 and eff.std() > 0 else True
        below = eff < LOW if rising else eff > HIGH     # before the transition, in x order
        above = eff > HIGH if rising else eff < LOW     # after it
        first_above = int(np.argmax(above)) if above.any() else len(x) - 1
        before = np.flatnonzero(below[:first_above + 1])
        low = x[before[-1]] if len(before) else math.nan
        inside = int(((eff >= LOW) & (eff <= HIGH)).sum())
        bracket = (low, x[first_above])
        if inside < 2:
            return (math.nan, math.nan, rising, False, len(x), inside, *bracket, str(Status.UNRESOLVED)), None
        mu, sigma, ok = fit(x, eff, rising)
        status = Status.FIT if ok else Status.FAILED
        return (mu, sigma, rising, ok, len(x), inside, *bracket, str(status)), ((mu, sigma, rising) if ok else None)

    def _curves(self, curves, summary, fitted, chips, extra, x_col, eff_col, title):
        fig, panels = chip_panels(chips, f"{eff_col.split('_')[0].upper()} efficiency versus {x_col}"
                                  + (f"\n{title}" if title else ""))
        shown = summary.merge(curves[CHANNEL + extra].drop_duplicates(), on=CHANNEL + extra)
        for chip, ax in panels.items():
            mine = shown[shown.chip == chip]
            if mine.empty:
                no_data(ax, f"no data: no channel reaches {HIGH:.0%} efficiency")
                continue
            for i, (color, (_, s)) in enumerate(zip(distinct_colors(len(mine)), mine.iterrows())):
                key = tuple(s[c] for c in CHANNEL + extra)
                g = curves[np.logical_and.reduce([_same(curves[c], v) for c, v in zip(CHANNEL + extra, key)])]
                name = f"{'ch' if s.channeltype == 0 else 'calib'} {s.channel}"
                ax.plot(g[x_col], g[eff_col], "o", ms=3, color=color)
                if key in fitted:
                    grid = np.linspace(g[x_col].min(), g[x_col].max(), 200)
                    ax.plot(grid, model(grid, *fitted[key]), "-", lw=1, color=color, label=name)
                elif s.status == str(Status.UNRESOLVED):  # where the turn-on is, as far as the scan knows
                    y = 0.5 + 0.04 * (i - (len(mine) - 1) / 2)  # staggered: equal intervals stay visible
                    ax.plot([s.bracket_low, s.bracket_high], [y, y], "|-", lw=2, ms=10, color=color,
                            label=f"{name}: between {s.bracket_low:g} and {s.bracket_high:g}")
                else:
                    ax.plot([], [], "o", color=color, label=f"{name}: {s.status}")
            ax.set_xlabel(f"{x_col} (DAC steps)")
            ax.set_ylim(-0.05, 1.05)
            # below the panel: inside, any corner can hide a curve or a bracket
            legend_outside(ax, fontsize=7, ncol=1 if (mine.status == str(Status.UNRESOLVED)).any() else 2)
        panels[min(panels)].set_ylabel("efficiency")
        return fig

    def _thresholds(self, s, chips, extra, x_col, title):
        fig, panels = chip_panels(chips, f"S-curve 50 % points ({x_col}); bars: fitted width or, "
                                  "unresolved, the bracketing interval" + (f"\n{title}" if title else ""))
        for chip, ax in panels.items():
            rows = s[s.chip == chip]
            if rows.empty:
                no_data(ax)
                continue
            x = rows.channel + 100 * (rows.channeltype == 1)
            fit_rows = rows.status == str(Status.FIT)
            if fit_rows.any():
                ax.errorbar(x[fit_rows], rows.threshold[fit_rows], yerr=rows.width[fit_rows], fmt="o", ms=4,
                            capsize=2, label="fit")
            open_rows = rows.status == str(Status.UNRESOLVED)
            if open_rows.any():
                mid = (rows.bracket_low + rows.bracket_high)[open_rows] / 2
                half = (rows.bracket_high - rows.bracket_low)[open_rows] / 2
                ax.errorbar(x[open_rows], mid, yerr=half, fmt="none", capsize=4, lw=2, color="tab:orange",
                            label="unresolved: between")
            calib = rows.channeltype == 1
            if calib.any():  # they share the axis with the channels, shifted past channel 71
                ax.plot(x[calib], (rows.threshold.where(fit_rows, (rows.bracket_low + rows.bracket_high) / 2))[calib],
                        "s", mfc="none", ms=9, color="tab:green", label="calibration channel (at 100 + its index)")
            ax.set_xlabel("channel (calibration channels at 100 + index)" if calib.any() else "channel")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
        panels[min(panels)].set_ylabel(f"threshold ({x_col} DAC steps)")
        return fig


def _same(column: pd.Series, value) -> np.ndarray:
    if isinstance(value, float) and math.isnan(value):
        return column.isna().to_numpy()
    return (column == value).to_numpy()


def _shown(curves, summary, extra):
    """The slice the plots show (the one with most points, a known value first), and its title."""
    if not extra:
        return curves, ""
    parts = list(slices(curves, extra))
    known = [(v, r) for v, r in parts if not any(isinstance(x, float) and math.isnan(x) for x in v)]
    values, rows = max(known or parts, key=lambda vr: len(vr[1]))
    return rows, f"{describe(extra, values)} (slices: {'; '.join(describe(extra, v) for v, _ in parts)})"


DISTILLERY = SCurve
