"""Per-channel `trim_tot` values that put the TOT 50 % points of each half at one charge.

Input: a `trim_tot` scan at one fixed injected charge near the TOT threshold (hexactrl-script's
tot_trim_scan.py: LowRange, Calib 800, trim_tot 0..63 in steps of 2 or 4), read through
`tot_efficiency`; the analysis, the parameters and the summary are those of `trims` (read
its docstring). TOT turn-ons are broad (the comparator sees a saturated preamp: tens of fC
of noise), several trim steps wide, so the error-function fit uses several points of each
curve. Writes {roc_sN: {ch: {N: {trim_tot: value}}}} for every channel it could trim;
flagged channels (status column, named in notes) get none.

Parameters: `injected_channels`, `target_trim` (default null: D = 0, every threshold at the
scanned charge, as hexactrl-script's tot_trim_scan analysis sets each channel to the
middle of its 50 % crossing), `max_trim` (63).
"""

from __future__ import annotations

from .trims import TrimAlignment


class TotTrim(TrimAlignment):
    trim = "trim_tot"
    measure = "tot"


DISTILLERY = TotTrim
