"""Tot_vref per half just above where noise stops firing the TOT (tuning chain, issue 21).

Input: a Tot_vref scan without injection. hexactrl-script's tot_vref_scan.py sets Tot_vref
with injection (the median 50 % point of injected channels); this is its noise floor: the
lowest Tot_vref a half can take before the TOT fires on noise. The method, summary and flags
are those of `thresholds` (its docstring); the calibration is
{roc_sN: {ReferenceVoltage: {half: {Tot_vref: value}}}} for the halves that got a value.
"""

from __future__ import annotations

from .thresholds import Discriminator, NoiseThreshold


class TotThreshold(NoiseThreshold):
    discriminator = Discriminator("TOT", "Tot_vref", "tot_efficiency")
    defaults = {
        "max_noise_rate": 1e-3,   # a choice, the same as toa_threshold's (see there)
        # a choice: hexactrl-script has no noise scan of Tot_vref, so no margin to take; the
        # TOA's +10 (toa_vref_scan_noinj_analysis.py), as both are 10-bit references of a half
        "margin": 10,
        "confidence": 0.95,
    }


DISTILLERY = TotThreshold
