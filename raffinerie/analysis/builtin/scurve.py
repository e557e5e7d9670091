"""S-curves: TOA (or TOT) efficiency versus a scanned parameter, with an error-function fit.

For every channel whose efficiency goes from below 10 % to above 90 % over the
scan, fits eff(x) = 1/2 [1 + erf((x - threshold) / (sqrt(2) width))] (or the
falling version when the efficiency falls with x, as for Toa_vref) by
Gauss-Newton, started from where the efficiency crosses 50 %.

Summary columns: chip, channeltype, channel, threshold, width, rising,
fit_ok, n_points, status (`fit`, or `fires below the scan` for a channel
already efficient at the first point: its threshold is NaN). `scan` names the x column (default: the first of Calib,
Toa_vref, Tot_vref that varies); `measure` is `toa` or `tot`.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .common import Distillery, chip_panels, channel_colors


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
        rows = data[data.channeltype != 100]
        curves = rows.groupby(["chip", "channeltype", "channel", x_col], as_index=False)[eff_col].mean()
        out, fitted = [], {}
        for key, g in curves.groupby(["chip", "channeltype", "channel"]):
            x, eff = g[x_col].to_numpy(float), g[eff_col].to_numpy(float)
            if eff.max() < 0.9:
                continue  # never efficient: not injected
            if eff.min() > 0.1:
                out.append((*key, math.nan, math.nan, True, False, len(x), "fires below the scan"))
                continue
            rising = np.corrcoef(x, eff)[0, 1] > 0 if len(x) > 1 else True
            mu, sigma, ok = fit(x, eff, rising)
            out.append((*key, mu, sigma, rising, ok, len(x), "fit"))
            fitted[key] = (mu, sigma, rising)
        summary = pd.DataFrame(out, columns=["chip", "channeltype", "channel", "threshold", "width",
                                             "rising", "fit_ok", "n_points", "status"])
        if not fitted:
            raise ValueError(f"no channel's {eff_col} crosses from below 10 % to above 90 % in this scan")
        return summary, {"scurves": lambda: self._curves(curves, fitted, x_col, eff_col),
                         "thresholds": lambda: self._thresholds(summary, x_col)}, None

    def _curves(self, curves, fitted, x_col, eff_col):
        fig, panels = chip_panels(curves.chip.unique(), f"{eff_col.split('_')[0].upper()} efficiency versus {x_col}")
        for chip, ax in panels.items():
            keys = [k for k in fitted if k[0] == chip]
            for color, key in zip(channel_colors(len(keys)), keys):
                g = curves[(curves.chip == key[0]) & (curves.channeltype == key[1]) & (curves.channel == key[2])]
                ax.plot(g[x_col], g[eff_col], "o", ms=3, color=color)
                grid = np.linspace(g[x_col].min(), g[x_col].max(), 200)
                ax.plot(grid, model(grid, *fitted[key]), "-", lw=1, color=color,
                        label=f"{'ch' if key[1] == 0 else 'calib'} {key[2]}")
            ax.set_xlabel(f"{x_col} (DAC steps)")
            ax.set_ylim(-0.05, 1.05)
        panels[min(panels)].set_ylabel("efficiency")
        panels[min(panels)].legend(fontsize=7, ncol=2)
        return fig

    def _thresholds(self, s, x_col):
        fig, panels = chip_panels(s.chip.unique(), f"S-curve 50 % points ({x_col}); bars: fitted width")
        for chip, ax in panels.items():
            rows = s[s.chip == chip]
            ax.errorbar(rows.channel + 100 * (rows.channeltype == 1), rows.threshold, yerr=rows.width,
                        fmt="o", ms=4, capsize=2)
            ax.set_xlabel("channel (calibration channels at 100+)")
        panels[min(panels)].set_ylabel(f"threshold ({x_col} DAC steps)")
        return fig


DISTILLERY = SCurve
