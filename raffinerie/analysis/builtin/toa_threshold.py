"""Toa_vref per half just above where noise stops firing the TOA (tuning chain, issue 21).

Input: a Toa_vref scan without injection (hexactrl-script's toa_vref_scan_noinj.py). The
method, summary and flags are those of `thresholds` (its docstring); the calibration is
{roc_sN: {ReferenceVoltage: {half: {Toa_vref: value}}}} for the halves that got a value.
"""

from __future__ import annotations

from .thresholds import Discriminator, NoiseThreshold


class ToaThreshold(NoiseThreshold):
    discriminator = Discriminator("TOA", "Toa_vref", "toa_efficiency")
    defaults = {
        # a choice: one channel in a thousand events fires on noise. hexactrl-script's analysis
        # (toa_vref_scan_noinj_analysis.py findVref) keeps a Toa_vref as noisy while any channel
        # exceeds 1 % of 2000 events; 1e-3 asks for a quieter half, and says when the scan's
        # events (about 3000 needed at 95 %) cannot show it
        "max_noise_rate": 1e-3,
        # hexactrl-script toa_vref_scan_noinj_analysis.py findVref: "Adding some margin !" +10
        "margin": 10,
        # a choice: the usual one-sided 95 % for an upper limit (3/N at 0 fired)
        "confidence": 0.95,
    }


DISTILLERY = ToaThreshold
