"""The sampling phase (`Top.0.phase_strobe`) of each chip at the maximum of its injected pulses.

Input: a `phase_strobe` scan (0..15) at one fixed injected charge, as hexactrl-script's
sampling_scan.py takes it (LowRange, Calib 900, four injected channels per chip; its
analysis puts each chip at the mean over its injected channels of the phase of maximum
adc_mean). Here: each injected channel's adc_mean versus phase, centred on its own mean
over the phases, then per phase the median over the chip's channels, and the phase of the
maximum of that median curve. Why centred and not minus a pedestal: the pedestal does not
move with the phase, so any per-channel constant leaves each curve's shape (and maximum)
alone, and a scan of the pulse never samples the pedestal itself (it would need a pedestal
run, another dataset); centring removes the channels' different pedestals before the
median, so the median is a typical pulse and not the curve of whichever channel sits in
the middle of the pedestal spread. The median (not the mean) lets a dead or mis-injected
channel not move the choice.

A chip is FLAGGED, and gets no phase, when its maximum lies at the first or last phase of
the scan (the true maximum may lie beyond it), when its injected channels saturate at the
maximum (median adc_median at or above `saturation_adc`: the top of the pulse is flat, so
its maximum says nothing about the phase; inject less), or when it has no injected
channel. Writes {roc_sN: {Top: {0: {phase_strobe: value}}}} for the other chips.

Parameters: `injected_channels` (default: those with HighRange or LowRange set in the
dataset), `saturation_adc` (1000, as builtin.injection: the preamp saturates near
1000 ADC above which pulse heights are flat).

Summary columns (one row per chip): chip, phase_strobe (chosen; empty when flagged),
peak_phase (the maximum of the median curve, flagged or not), peak_adc (median
adc_median of the injected channels at that phase), amplitude (the
median curve's maximum minus its minimum, ADC), n_channels, agreeing (channels whose own
maximum is within one step of the chip's), phase_low, phase_high (the scan's phases),
status (`chosen`, `maximum at the scan's edge`, `saturated`, `no injected channel`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .common import CHANNEL, Distillery, chip_panels, injected_rows, legend_outside, no_data, scan_axes

PHASE = "phase_strobe"
CHOSEN, EDGE, SATURATED, EMPTY = "chosen", "maximum at the scan's edge", "saturated", "no injected channel"


class SamplingPhase(Distillery):
    defaults = {"injected_channels": None, "saturation_adc": 1000}
    plots = ("adc_vs_phase",)
    calibrates = True
    injected_only = True

    def analyse(self, data):
        if PHASE not in data or data[PHASE].nunique() < 2:
            raise ValueError(f"the dataset has no {PHASE} scan (a {PHASE} column with 2 or more values)")
        injected = injected_rows(data, self.parameters["injected_channels"])
        rows = data[injected & (data.channeltype != 100) & data[PHASE].notna()]
        others = scan_axes(rows, (PHASE,)) if len(rows) else []
        if others:
            raise ValueError(f"the scan varies {', '.join(others)} besides {PHASE}; a phase is chosen at "
                             f"one charge: select one value with `where`")
        curves = rows.groupby(CHANNEL + [PHASE], as_index=False)[["adc_mean", "adc_median"]].mean()
        curves["centred"] = curves.adc_mean - curves.groupby(CHANNEL).adc_mean.transform("mean")
        chips = self.chips if self.chips is not None else data.chip.unique()
        phases = np.sort(data[PHASE].dropna().unique())
        summary = pd.DataFrame([self._chip(int(c), curves[curves.chip == c], phases) for c in sorted(chips)])
        summary["phase_strobe"] = summary["phase_strobe"].astype("Int64")
        for r in summary[summary.status != CHOSEN].itertuples():
            self.notes.append(f"roc_s{r.chip}: {r.status}" + (f" (maximum at {PHASE} {r.peak_phase:g}, "
                              f"median ADC {r.peak_adc:.0f})" if r.status != EMPTY else "")
                              + f"; no {PHASE} written")
        calibration = {f"roc_s{r.chip}": {"Top": {0: {PHASE: int(r.phase_strobe)}}}
                       for r in summary[summary.status == CHOSEN].itertuples()}
        return summary, {"adc_vs_phase": lambda: self._plot(curves, summary, chips)}, calibration

    def _chip(self, chip: int, mine: pd.DataFrame, phases: np.ndarray) -> dict:
        row = {"chip": chip, "phase_strobe": np.nan, "peak_phase": np.nan, "peak_adc": np.nan,
               "amplitude": np.nan, "n_channels": 0, "agreeing": 0,
               "phase_low": phases[0], "phase_high": phases[-1], "status": EMPTY}
        if mine.empty:
            return row
        typical = mine.groupby(PHASE).centred.median()
        peak = float(typical.idxmax())
        at_peak = mine[mine[PHASE] == peak]
        own = mine.loc[mine.groupby(CHANNEL).adc_mean.idxmax(), PHASE].to_numpy()   # each channel's maximum
        row.update(peak_phase=peak, peak_adc=float(at_peak.adc_median.median()),
                   amplitude=float(typical.max() - typical.min()), n_channels=len(own),
                   agreeing=int((np.abs(own - peak) <= 1).sum()))
        if row["peak_adc"] >= self.parameters["saturation_adc"]:
            row["status"] = SATURATED
        elif peak in (phases[0], phases[-1]):
            row["status"] = EDGE
        else:
            row.update(status=CHOSEN, phase_strobe=peak)
        return row

    def _plot(self, curves, summary, chips):
        fig, panels = chip_panels(chips, "ADC of the injected channels versus sampling phase: each channel "
                                  "(thin), their median (thick), the chosen phase (red)")
        top = self.parameters["saturation_adc"]
        for chip, ax in panels.items():
            mine = curves[curves.chip == chip]
            s = summary[summary.chip == chip].iloc[0]
            if mine.empty:
                no_data(ax, EMPTY)
                continue
            for _, g in mine.groupby(CHANNEL):
                ax.plot(g[PHASE], g.adc_mean, "-", lw=0.6, alpha=0.5, color="tab:blue")
            level = mine.groupby(CHANNEL).adc_mean.mean().median()
            typical = mine.groupby(PHASE).centred.median() + level
            ax.plot(typical.index, typical.to_numpy(), "o-", lw=2, ms=4, color="black",
                    label="median (centred) + median level")
            ax.axhline(top, color="grey", ls="--", lw=0.8, label=f"saturation ({top:g} ADC)")
            if s.status == CHOSEN:
                ax.axvline(s.phase_strobe, color="tab:red", lw=1.5, label=f"chosen: {PHASE} {s.phase_strobe}")
            else:
                ax.axvline(s.peak_phase, color="tab:red", lw=1.5, ls=":", label=f"maximum {s.peak_phase:g}: "
                           f"FLAGGED, {s.status}")
            ax.set_xlabel(f"{PHASE} (1.5625 ns steps)")
            legend_outside(ax, fontsize=7)
        panels[min(panels)].set_ylabel("adc_mean (ADC counts)")
        return fig


DISTILLERY = SamplingPhase
