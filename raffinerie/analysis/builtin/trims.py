"""Per-channel discriminator trims (trim_toa, trim_tot) that align the 50 % points of each half.

Shared by `toa_trim` and `tot_trim`. Input: a scan of the trim (the dataset's `trim_toa` or
`trim_tot` column is each channel's value) at one fixed injected charge. The model of the
chain (hexactrl-script's toa_trim_scan.py / tot_trim_scan.py, and the chip): a channel's
threshold falls linearly with its trim, so at a fixed charge its efficiency rises with the
trim and crosses 50 % at one trim, t50. Putting every channel of a half at trim
t50 - D (one shift D per half) puts every threshold at the same charge: exactly the scanned
charge for D = 0 (hexactrl-script's choice: each channel gets its own crossing), and D trim
steps above it otherwise (only as well aligned as the channels' trim steps are equal: a
few per cent of D, so D is kept as small as the range allows).

t50 per channel: an error-function fit (scurve.fit) when at least two scan points lie
inside the 10-90 % transition, else the linear interpolation of the 50 % crossing
between the two points around it (one point inside), else (no point inside, a
transition sharper than the scan's step) it is unresolved and the channel is flagged.
The fit is kept only if it converged and its 50 % point lies between the last point below
50 % and the first above; otherwise the interpolation is used (the `method` column).

The shift D of a half keeps the most channels inside 0..max_trim; among the shifts that
do, the one closest to the wanted shift: 0 (`target_trim: null`, the default: the
threshold at the scanned charge) or median(t50) - target_trim (the median channel at
`target_trim`, e.g. 31 to leave room both ways for a later move of the reference voltage).

A channel is FLAGGED, and gets no trim, when it never fires (below 10 % at every trim),
stays below (or above) 50 % at every trim (its crossing lies outside the scan), is
unresolved, or needs a trim outside 0..max_trim; `notes` name each (chip, channel).

Summary columns: chip, channeltype, channel, half, t50 (trim steps), width (fitted, trim
steps), method, bracket_low, bracket_high (the scan points around the crossing), shift (D
of the half), <trim> (chosen, empty when flagged), residual (expected 50 % point after
trimming minus the half's target, trim steps: the rounding), status (`trimmed` or the
reason it is flagged), n_left_out (points left out of the curve: those whose fired TOA codes sit
within 3 LSB of the TDC's 0/1023 wrap, where a hit reads 0, "no hit", so their efficiency
counts lost events; the notes name them).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from raffinerie.qc import CellFlag

from .common import CHANNEL, Distillery, board_hexmap, chip_panels, distinct_colors, injected_rows, \
    legend_outside, mislabelled_points, no_data, scan_axes
from .scurve import HIGH, LOW, fit, model

TRIMMED = "trimmed"
NEVER = "never fires"
ALWAYS_BELOW = "below 50 % at every trim"
ALWAYS_ABOVE = "above 50 % at every trim"
UNRESOLVED = "unresolved: no point inside the transition"
GAP = "unresolved: its crossing lies in a gap of points left out"
OUT_OF_RANGE = "needed trim outside the range"
MAX_TRIM = 63            # trim_toa and trim_tot are 6-bit registers (HGCROC3_regmap.csv)
SHIFT_STEP = 0.25        # resolution (trim steps) of the search for D: finer than the rounding
CURVES_PER_CHIP = 6      # channels drawn in the efficiency plot: readable, not a smear
TOA_CODES = 1024         # the TOA is 10 bits and wraps (hgcroc-physics.md)
# a median code this close to the wrap loses hits to code 0: the codes' jitter is about half
# an LSB (the emulator's, and a TDC's bin), so at 3 LSB a 0 is 5 sigma away
TDC_WRAP_MARGIN = 3


def at_wrap(rows: pd.DataFrame) -> pd.Series:
    """Rows whose fired TOA codes sit on the TDC's wrap: their median code within
    TDC_WRAP_MARGIN of 0 (1024) on the circle. There a hit's code rounds to 0, which the chip's
    word reads as "no hit", so the efficiency counts lost events, not the threshold."""
    if "toa_median" not in rows:
        return pd.Series(False, index=rows.index)
    code = rows.toa_median.to_numpy(float) % TOA_CODES
    return pd.Series(np.minimum(code, TOA_CODES - code) <= TDC_WRAP_MARGIN, index=rows.index) \
        & (rows["toa_efficiency"] > 0)


def crossing(x: np.ndarray, eff: np.ndarray, step: float = math.inf) -> tuple[float, float, str, float,
                                                                            float, str]:
    """(t50, width, method, bracket_low, bracket_high, status) of one channel's curve, x sorted.
    `step`: the scan's step; a crossing interpolated over more than two of them (points left
    out) says too little of where it lies, so the channel is flagged."""
    nan = math.nan
    if eff.max() < LOW:
        return nan, nan, "", nan, nan, NEVER
    above = eff >= 0.5
    if above.all():
        return nan, nan, "", nan, x[0], ALWAYS_ABOVE
    if not above.any():
        return nan, nan, "", x[-1], nan, ALWAYS_BELOW
    rising = bool(above[-1]) if above[0] != above[-1] else bool(np.corrcoef(x, eff)[0, 1] >= 0)
    # the first change from below to above 50 % along the direction the curve goes
    flips = np.flatnonzero((~above[:-1] & above[1:]) if rising else (above[:-1] & ~above[1:]))
    if not len(flips):
        return nan, nan, "", nan, nan, UNRESOLVED
    i = int(flips[0])
    low, high = x[i], x[i + 1]
    inside = int(((eff >= LOW) & (eff <= HIGH)).sum())
    if inside == 0:
        return nan, nan, "", low, high, UNRESOLVED
    t50 = low + (0.5 - eff[i]) / (eff[i + 1] - eff[i]) * (high - low)
    if inside >= 2:
        mu, sigma, ok = fit(x, eff, rising)
        if ok and low <= mu <= high:
            return mu, sigma, "erf fit", low, high, TRIMMED
    if high - low > 2 * step:
        return nan, nan, "", low, high, GAP
    return t50, nan, "interpolation", low, high, TRIMMED


def choose_shift(t50: np.ndarray, wanted: float, max_trim: int = MAX_TRIM) -> float:
    """The shift D that keeps the most trims rint(t50 - D) inside 0..max_trim, closest to `wanted`."""
    t50 = t50[np.isfinite(t50)]
    if not len(t50):
        return math.nan
    # every shift that can matter lies within the span of t50 minus the range
    lo, hi = min(t50.min() - max_trim, wanted) - 1, max(t50.max(), wanted) + 1
    shifts = np.arange(math.floor(lo), math.ceil(hi) + SHIFT_STEP, SHIFT_STEP)
    trims = np.rint(t50[None, :] - shifts[:, None])
    counts = ((trims >= 0) & (trims <= max_trim)).sum(axis=1)
    best = np.flatnonzero(counts == counts.max())
    return float(shifts[best[np.argmin(np.abs(shifts[best] - wanted))]])


class TrimAlignment(Distillery):
    """Subclasses set `trim` (the register) and `measure` (toa or tot)."""

    trim = "trim_toa"
    measure = "toa"
    defaults = {"injected_channels": None, "target_trim": None, "max_trim": MAX_TRIM}
    plots = ("trim_hexmap", "efficiency_vs_trim", "alignment")
    calibrates = True
    injected_only = True

    def analyse(self, data):
        trim, eff = self.trim, f"{self.measure}_efficiency"
        if trim not in data or data[trim].nunique() < 2:
            raise ValueError(f"the dataset has no {trim} scan (a {trim} column with 2 or more values)")
        injected = injected_rows(data, self.parameters["injected_channels"])
        check = mislabelled_points(data, self.notes, injected=injected)
        rows = check.drop(data[injected & (data.channeltype != 100)])
        if rows.empty:
            raise ValueError("no injected channel in the dataset (HighRange or LowRange set, or "
                             "`injected_channels`): a trim needs an injected charge")
        others = scan_axes(rows, (trim,))
        if others:
            raise ValueError(f"the scan varies {', '.join(others)} besides {trim}; a trim is chosen at "
                             f"one charge: select one value with `where`")
        wrapped = at_wrap(rows) if self.measure == "toa" else pd.Series(False, index=rows.index)
        curves = rows.assign(wrapped=wrapped).groupby(CHANNEL + ["half", trim], as_index=False).agg(
            **{eff: (eff, "mean"), "wrapped": ("wrapped", "any")})
        summary = self._summary(curves, trim, eff)
        self._note(summary, rows[trim])
        calibration = self._calibration(summary)
        chips = self.chips if self.chips is not None else data.chip.unique()
        mid = (rows[trim].min() + rows[trim].max()) / 2
        flagged = summary.assign(flag=np.where(summary.status == TRIMMED, "ok", "untunable"))
        return summary, {
            "trim_hexmap": board_hexmap(flagged, trim, f"chosen {trim}", "DAC", chips=chips,
                                        bad={"untunable": CellFlag.UNTUNABLE}),
            "efficiency_vs_trim": lambda: self._curves(curves, summary, chips, eff),
            "alignment": lambda: self._alignment(summary, chips, mid)}, calibration

    def _summary(self, curves: pd.DataFrame, trim: str, eff: str) -> pd.DataFrame:
        out = []
        for key, g in curves.groupby(CHANNEL + ["half"]):   # one small curve per channel
            g = g.sort_values(trim)
            lost, scanned = g.wrapped.to_numpy(bool), g[trim].to_numpy(float)
            x, y = scanned[~lost], g[eff].to_numpy(float)[~lost]
            step = float(np.median(np.diff(scanned))) if len(scanned) > 1 else math.inf
            out.append((*key, *crossing(x, y, step), int(lost.sum()), list(scanned[lost])))
        s = pd.DataFrame(out, columns=CHANNEL + ["half", "t50", "width", "method", "bracket_low",
                                                  "bracket_high", "status", "n_left_out", "left_out"])
        self._note_left_out(s[s.n_left_out > 0])
        target, top = self.parameters["target_trim"], int(self.parameters["max_trim"])
        shifts = {}
        for (chip, half), g in s[s.status == TRIMMED].groupby(["chip", "half"]):
            wanted = 0.0 if target is None else float(np.median(g.t50)) - float(target)
            shifts[(chip, half)] = choose_shift(g.t50.to_numpy(float), wanted, top)
        s["shift"] = [shifts.get((c, h), math.nan) for c, h in zip(s.chip, s.half)]
        chosen = np.rint(s.t50 - s["shift"])
        outside = (s.status == TRIMMED) & ((chosen < 0) | (chosen > top))
        s.loc[outside, "status"] = OUT_OF_RANGE
        ok = s.status == TRIMMED
        s[trim] = pd.array(np.where(ok, chosen, np.nan), dtype="Float64").astype("Int64")
        s["residual"] = np.where(ok, s.t50 - s["shift"] - chosen, np.nan)
        return s[CHANNEL + ["half", "t50", "width", "method", "bracket_low", "bracket_high", "shift", trim,
                            "residual", "status", "n_left_out"]]

    def _note_left_out(self, s: pd.DataFrame) -> None:
        """Name the channels with points left out as lost events, and where."""
        if len(s):
            where = ", ".join(f"roc_s{r.chip} {_name(r)} at {self.trim} {', '.join(f'{v:g}' for v in r.left_out)}"
                              for r in s.itertuples())
            self.notes.append(f"{len(s)} channels with points left out, their TOA codes on the TDC's wrap "
                              f"(a hit there reads 0, no hit: the efficiency counts lost events): {where}")

    def _note(self, s: pd.DataFrame, scanned: pd.Series) -> None:
        """One line per half (its shift and spreads), one per flag reason naming the channels."""
        span = f"{self.trim} {scanned.min():g}..{scanned.max():g}"
        for (chip, half), g in s.groupby(["chip", "half"]):
            ok = g[g.status == TRIMMED]
            if len(ok):
                self.notes.append(f"roc_s{chip} half {half}: {len(ok)} of {len(g)} channels trimmed, shift "
                                  f"{ok['shift'].iloc[0]:+g} steps; 50 % points spread {ok.t50.std():.2f} "
                                  f"steps (rms) before, {ok.residual.std():.2f} after (rounding)")
            else:
                self.notes.append(f"roc_s{chip} half {half}: no channel can be trimmed")
        for status, g in s[s.status != TRIMMED].groupby("status"):
            where = "; ".join(f"roc_s{chip} " + ", ".join(_name(r) for r in rows.itertuples())
                              for chip, rows in g.groupby("chip"))
            self.notes.append(f"{len(g)} channels flagged, {status} ({span}): {where}; "
                              f"no {self.trim} written")

    def _calibration(self, s: pd.DataFrame) -> dict:
        calibration: dict = {}
        for r in s[s.status == TRIMMED].itertuples():
            block = "ch" if r.channeltype == 0 else "calib"
            calibration.setdefault(f"roc_s{int(r.chip)}", {}).setdefault(block, {})[int(r.channel)] = \
                {self.trim: int(getattr(r, self.trim))}
        return calibration

    def _curves(self, curves, s, chips, eff):
        """A few channels per chip: measured efficiency, the fit (or the interpolated crossing)."""
        fig, panels = chip_panels(chips, f"{self.measure.upper()} efficiency versus {self.trim} at the "
                                  "scanned charge: measured (points; x: on the TDC's wrap, left out), "
                                  "fit (lines), 50 % point (ticks)")
        for chip, ax in panels.items():
            shown = _some(s[s.chip == chip])
            if shown.empty:
                no_data(ax)
                continue
            for color, r in zip(distinct_colors(len(shown)), shown.itertuples()):
                g = curves[(curves.chip == chip) & (curves.channeltype == r.channeltype)
                           & (curves.channel == r.channel)].sort_values(self.trim)
                lost = g.wrapped.to_numpy(bool)       # on the TDC's wrap: drawn, left out of the fit
                ax.plot(g[self.trim][~lost], g[eff][~lost], "o", ms=3, color=color)
                ax.plot(g[self.trim][lost], g[eff][lost], "x", ms=5, color=color)
                label = f"{_name(r)}: " + (f"t50 {r.t50:.1f}" if np.isfinite(r.t50) else r.status)
                if np.isfinite(r.width):
                    grid = np.linspace(g[self.trim].min(), g[self.trim].max(), 200)
                    rising = g[eff].iloc[-1] >= g[eff].iloc[0]
                    ax.plot(grid, model(grid, r.t50, r.width, rising), "-", lw=1, color=color, label=label)
                else:
                    ax.plot(g[self.trim], g[eff], ":", lw=0.8, color=color, label=label)
                if np.isfinite(r.t50):
                    ax.plot([r.t50], [0.5], "|", ms=12, mew=2, color=color)
            ax.axhline(0.5, color="grey", lw=0.6, ls="--")
            ax.set_ylim(-0.05, 1.05)
            ax.set_xlabel(f"{self.trim} (DAC steps)")
            legend_outside(ax, fontsize=7, ncol=2)
        panels[min(panels)].set_ylabel("efficiency")
        return fig

    def _alignment(self, s, chips, mid):
        """50 % points relative to the scanned charge: all channels at the middle trim, and trimmed."""
        fig, panels = chip_panels(chips, f"50 % points in {self.trim} steps above the scanned charge: "
                                  f"all at {self.trim} {mid:g} (grey) and trimmed (green)")
        for chip, ax in panels.items():
            rows = s[s.chip == chip]
            if rows.empty:
                no_data(ax)
                continue
            x = rows.channel + 100 * (rows.channeltype == 1)
            ok = (rows.status == TRIMMED).to_numpy()
            ax.plot(x, rows.t50 - mid, "o", ms=3, color="tab:grey", label="before")
            after = rows.t50 - rows[self.trim].astype(float)
            ax.plot(x[ok], after[ok], "o", ms=3, color="tab:green", label="after (expected)")
            for half in (0, 1):
                mine = rows[(rows.half == half) & ok]
                if len(mine):
                    ax.hlines(mine["shift"].iloc[0], 36 * half - 0.5, 36 * half + 35.5, color="tab:red", lw=1,
                              label="half target" if half == 0 else None)
                    ax.text(36 * half + 17.5, 0.97, f"half {half} rms: {mine.t50.std():.1f} before, "
                            f"{mine.residual.std():.2f} after", va="top",
                            transform=ax.get_xaxis_transform(), ha="center", fontsize=8)
            low, high = ax.get_ylim()
            ax.set_ylim(low, high + 0.12 * (high - low))   # room for the rms line above the points
            if (~ok).any():
                ax.plot(x[~ok], np.zeros((~ok).sum()), "x", ms=7, color="tab:red",
                        transform=ax.get_xaxis_transform(), clip_on=False, label="flagged (no trim)")
            ax.set_xlabel("channel")
            legend_outside(ax, fontsize=7, ncol=2)
        panels[min(panels)].set_ylabel(f"50 % point ({self.trim} steps)")
        return fig


def _name(r) -> str:
    return f"{'ch' if r.channeltype == 0 else 'calib'} {int(r.channel)}"


def _some(s: pd.DataFrame) -> pd.DataFrame:
    """Up to CURVES_PER_CHIP channels: two flagged ones if any, the rest spread over the trimmed."""
    flagged, ok = s[s.status != TRIMMED], s[s.status == TRIMMED].sort_values("t50")
    flagged = flagged.iloc[:2]
    n = min(CURVES_PER_CHIP - len(flagged), len(ok))
    picks = ok.iloc[np.linspace(0, len(ok) - 1, n).round().astype(int)] if n > 0 else ok.iloc[:0]
    return pd.concat([picks, flagged])
