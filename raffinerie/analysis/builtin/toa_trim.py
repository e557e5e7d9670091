"""Per-channel `trim_toa` values that put the TOA 50 % points of each half at one charge.

Input: a `trim_toa` scan at one fixed injected charge (internal injection, HighRange or
LowRange, a Calib near the TOA threshold), as hexactrl-script's toa_trim_scan.py takes
it; the analysis, the parameters and the summary are those of `trims` (read its
docstring): per channel the trim t50 at which the TOA efficiency crosses 50 %, then per
half trims t50 - D. Writes {roc_sN: {ch: {N: {trim_toa: value}}}} for every channel it
could trim; flagged channels (status column, named in notes) get none.

Parameters: `injected_channels` (default: those with HighRange or LowRange set),
`target_trim` (default null: D = 0, every threshold at the scanned charge, as
hexactrl-script's toa_trim_scan analysis sets each channel to its own turn-on; a number:
the median channel of a half gets it), `max_trim` (63: the 6-bit register).
"""

from __future__ import annotations

from .trims import TrimAlignment


class ToaTrim(TrimAlignment):
    trim = "trim_toa"
    measure = "toa"


DISTILLERY = ToaTrim
