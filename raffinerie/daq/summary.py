"""Per-channel statistics and the event table of a run.

One summary row per (chip, half, slot): 36 channels, the calibration channel
and two common-mode values per half, so 234 rows for an LD hexaboard, in the
order of hexactrl's run summaries. Only good halves (corruption 0) count.

ADC, TOT and TOA are small integers, so every statistic comes from one
histogram per quantity (a single `bincount` over all channels at once):
quantiles are read off cumulative counts instead of sorting each channel.
Quantiles use linear interpolation between order statistics (numpy's
default). TOT and TOA statistics are over the events in which they fired
(field > 0); with none, they are NaN. Standard deviations are population
ones.

A raw TOT field of 0x3FF (4088 decompressed) is the chip's overflow code,
not a measured time: it is counted in `tot_overflow` and left out of every
TOT statistic (median, IQR, mean, std). It still counts as a TOT that fired
in `tot_efficiency`, which says whether TOT fired, not whether it measured.
"""

from __future__ import annotations

import numpy as np

from raffinerie.daq.rawformat import Frames, Halves, channel_fields, check_halves, common_mode, decompress_tot
from raffinerie.hgcroc import CALIB_SLOT, CHANNELS_PER_HALF, CHANNELTYPE_CALIB, CHANNELTYPE_CHANNEL, \
    CHANNELTYPE_CM, CM_SLOTS, EVENT_COLUMNS, HALVES, SUMMARY_COLUMNS, SLOTS_PER_HALF

TOT_OVERFLOW_CODE = 0x3FF   # raw 10-bit TOT field of the overflow marker (decompresses to 4088)

# TOT bins are ordered by decompressed value (the 10-bit code is not monotonic
# in it), so that cumulative counts run in value order for every quantity
_TOT_BY_CODE = decompress_tot(np.arange(1024)).astype(np.int64)
_TOT_ORDER = np.argsort(_TOT_BY_CODE, kind="stable")
_TOT_BIN_OF_CODE = np.argsort(_TOT_ORDER).astype(np.int32)
_TOT_BIN_VALUES = _TOT_BY_CODE[_TOT_ORDER]
_PLAIN_BIN_VALUES = np.arange(1024, dtype=np.int64)


def slot_identity(n_chips: int) -> dict[str, np.ndarray]:
    """chip, half, channel, channeltype of every summary row (format section 5)."""
    chip = np.repeat(np.arange(n_chips), HALVES * SLOTS_PER_HALF)
    half = np.tile(np.repeat(np.arange(HALVES), SLOTS_PER_HALF), n_chips)
    slot = np.tile(np.arange(SLOTS_PER_HALF), HALVES * n_chips)
    # readout channels count on across the halves; calibration and CM channels number per chip
    cm = len(CM_SLOTS) * half + slot - CM_SLOTS[0]
    channel = np.where(slot < CALIB_SLOT, CHANNELS_PER_HALF * half + slot, np.where(slot == CALIB_SLOT, half, cm))
    channeltype = np.where(slot < CALIB_SLOT, CHANNELTYPE_CHANNEL,
                           np.where(slot == CALIB_SLOT, CHANNELTYPE_CALIB, CHANNELTYPE_CM))
    return {"chip": chip.astype(np.int16), "half": half.astype(np.int8),
            "channel": channel.astype(np.int16), "channeltype": channeltype.astype(np.int16)}


def _slot_values(frames: Frames, characterisation: np.ndarray, full: bool = False, dtype=np.uint16):
    """ADC, raw TOT, TOA (and with `full` ADC(BX-1) and flags) of all 39 slots.

    Arrays of shape (records, 2, 39); the CM slots have no TDC values. ADC,
    TOA and ADC(BX-1) are of `dtype` (the summary bins them as int32, written
    so at once), raw TOT uint16, flags uint8.
    """
    adc, adcm, tot, toa, flags = channel_fields(frames, characterisation)
    cm0, cm1 = common_mode(frames)
    out = [_slots(adc, dtype, (cm0, cm1)), _slots(tot, np.uint16), _slots(toa, dtype)]
    if full:
        out += [_slots(adcm, dtype), _slots(flags, np.uint8)]
    return out


def _slots(channels: np.ndarray, dtype, cm: tuple | None = None) -> np.ndarray:
    """The 37 channel slots of each half and the two CM slots (0 when not given), as one array."""
    out = np.empty(channels.shape[:2] + (SLOTS_PER_HALF,), dtype=dtype)
    out[:, :, :channels.shape[2]] = channels
    out[:, :, CM_SLOTS[0]], out[:, :, CM_SLOTS[1]] = cm if cm is not None else (0, 0)
    return out


def _stats(bins: np.ndarray, keep: np.ndarray | None, frames: Frames, n_chips: int,
           bin_values: np.ndarray) -> dict[str, np.ndarray]:
    """n, mean, population std, median and IQR of the kept entries of each slot.

    bins: (records, 2, SLOTS_PER_HALF) bin numbers, increasing with the value, which is
    bin_values[bin]; keep: which entries count (None: all). The histogram of
    each slot spans only the bins between its smallest and largest entry, all
    slots in one bincount; only its occupied bins are visited. Sums are exact
    (integers below 2**53).
    """
    n_groups = n_chips * HALVES * SLOTS_PER_HALF
    regular = _regular(frames, n_chips)
    if regular:  # records cycle through the chips: one row of groups per event
        bins = bins.reshape(-1, n_groups)
        keep = None if keep is None else keep.reshape(-1, n_groups)
        lo, hi = _range(bins, keep)
    else:
        lo = np.full((n_chips, HALVES, SLOTS_PER_HALF), 1 << 30, dtype=np.int64)
        hi = np.full((n_chips, HALVES, SLOTS_PER_HALF), -1, dtype=np.int64)
        for chip in range(n_chips):  # per-slot bin range
            rows = frames.chip == chip
            if rows.any():
                lo[chip], hi[chip] = _range(bins[rows], None if keep is None else keep[rows])
        lo, hi = lo.ravel(), hi.ravel()
    lo = np.where(hi >= 0, lo, 0).astype(np.int64)
    width = np.maximum(hi - lo + 1, 0)
    offset = np.cumsum(width) - width
    if regular:
        keys = bins + (offset - lo)[None, :]
    else:
        group = (frames.chip[:, None, None] * HALVES + np.arange(HALVES)[None, :, None]) * SLOTS_PER_HALF \
            + np.arange(SLOTS_PER_HALF)[None, None, :]
        keys = (offset - lo)[group] + bins
    counts = np.bincount(keys.ravel() if keep is None else keys[keep], minlength=int(width.sum()))
    occupied = np.flatnonzero(counts)
    c = counts[occupied]
    group_of = np.searchsorted(offset + width, occupied, side="right")
    value = bin_values[occupied - offset[group_of] + lo[group_of]]
    n = np.bincount(group_of, weights=c, minlength=n_groups).astype(np.int64)
    s1 = np.bincount(group_of, weights=c * value, minlength=n_groups).astype(np.int64)
    s2 = np.bincount(group_of, weights=c * value * value, minlength=n_groups).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s1 / n
        std = np.sqrt((n * s2 - s1 * s1).astype(np.float64)) / n
    cum = np.cumsum(c)
    start = np.cumsum(n) - n
    last = np.maximum(n - 1, 0)

    def value_at(rank: np.ndarray) -> np.ndarray:
        if not len(value):
            return np.zeros(n_groups)
        return value[np.minimum(np.searchsorted(cum, start + rank, side="right"), len(value) - 1)]

    def quantile(q: float) -> np.ndarray:
        pos = q * last
        low = np.floor(pos).astype(np.int64)
        below, above = value_at(low), value_at(np.minimum(low + 1, last))
        return np.where(n > 0, below + (pos - low) * (above - below), np.nan)

    return {"n": n, "mean": mean, "std": std, "median": quantile(0.5),
            "iqr": quantile(0.75) - quantile(0.25)}


def _range(bins: np.ndarray, keep: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Smallest and largest kept bin of each group (column); (1 << 30, -1) where none is."""
    if keep is None:  # every entry kept: no masked copies
        return bins.min(axis=0, initial=1 << 30), bins.max(axis=0, initial=-1)
    return (np.where(keep, bins, 1 << 30).min(axis=0, initial=1 << 30),
            np.where(keep, bins, -1).max(axis=0, initial=-1))


def _regular(frames: Frames, n_chips: int) -> bool:
    n = len(frames)
    return n % n_chips == 0 and bool(np.array_equal(
        frames.chip, np.tile(np.arange(n_chips, dtype=frames.chip.dtype), n // n_chips)))


def summarize(frames: Frames, characterisation: np.ndarray, halves: Halves | None = None,
              n_chips: int | None = None) -> dict[str, np.ndarray]:
    """The summary table (SUMMARY_COLUMNS) of a run, as numpy columns."""
    halves = halves or check_halves(frames)
    n_chips = n_chips or max(frames.n_chips, 1)
    adc, tot, toa = _slot_values(frames, characterisation, dtype=np.int32)
    if halves.good.all():  # the usual case: no mask for the ADC, none to combine for TOT and TOA
        good = None
        overflow = tot == TOT_OVERFLOW_CODE
        fired_tot, fired_toa = (tot > 0) & ~overflow, toa > 0
    else:
        good = np.broadcast_to(halves.good[:, :, None], adc.shape)
        overflow = good & (tot == TOT_OVERFLOW_CODE)
        fired_tot, fired_toa = good & (tot > 0) & ~overflow, good & (toa > 0)
    a = _stats(adc, good, frames, n_chips, _PLAIN_BIN_VALUES)
    # the overflow code is a marker, not a time: out of the TOT statistics
    t = _stats(_TOT_BIN_OF_CODE.take(tot), fired_tot, frames, n_chips, _TOT_BIN_VALUES)
    o = _stats(toa, fired_toa, frames, n_chips, _PLAIN_BIN_VALUES)
    n = a["n"]
    with np.errstate(invalid="ignore", divide="ignore"):
        n_overflow = _count(overflow, frames, n_chips)
        tot_eff, toa_eff = (t["n"] + n_overflow) / n, o["n"] / n
        tot_err = np.sqrt(tot_eff * (1 - tot_eff) / n)
        toa_err = np.sqrt(toa_eff * (1 - toa_eff) / n)
    table = slot_identity(n_chips)
    table.update({
        "n_events": n.astype(np.int32),
        "adc_median": a["median"], "adc_iqr": a["iqr"],
        "tot_median": t["median"], "tot_iqr": t["iqr"],
        "toa_median": o["median"], "toa_iqr": o["iqr"],
        "adc_mean": a["mean"], "adc_stdd": a["std"],
        "tot_mean": t["mean"], "tot_stdd": t["std"],
        "toa_mean": o["mean"], "toa_stdd": o["std"],
        "tot_efficiency": tot_eff, "tot_efficiency_error": tot_err,
        "toa_efficiency": toa_eff, "toa_efficiency_error": toa_err,
        "tot_overflow": n_overflow.astype(np.int32),
    })
    return {name: table[name] for name in SUMMARY_COLUMNS}  # hgcroc's order; a column missing fails here


def _count(flags: np.ndarray, frames: Frames, n_chips: int) -> np.ndarray:
    """Number of set flags per summary row; flags has shape (records, 2, SLOTS_PER_HALF)."""
    if _regular(frames, n_chips):  # one row of groups per event
        return np.count_nonzero(flags.reshape(-1, n_chips * HALVES * SLOTS_PER_HALF), axis=0).astype(np.int64)
    group = (frames.chip.astype(np.int64)[:, None, None] * HALVES + np.arange(HALVES)[None, :, None]) * SLOTS_PER_HALF \
        + np.arange(SLOTS_PER_HALF)[None, None, :]
    return np.bincount(group[flags], minlength=n_chips * HALVES * SLOTS_PER_HALF).astype(np.int64)


def event_table(frames: Frames, characterisation: np.ndarray,
                halves: Halves | None = None) -> dict[str, np.ndarray]:
    """One row per (event, chip, half, slot): EVENT_COLUMNS as numpy columns."""
    halves = halves or check_halves(frames)
    n = len(frames)
    adc, tot, toa, adcm, flags = _slot_values(frames, characterisation, full=True)
    ident = slot_identity(max(frames.n_chips, 1))
    per_chip = HALVES * SLOTS_PER_HALF
    index = (frames.chip[:, None] * per_chip + np.arange(per_chip)[None, :]).ravel()
    header = halves.header

    def per_slot(values: np.ndarray) -> np.ndarray:
        return np.broadcast_to(values[:, :, None], (n, HALVES, SLOTS_PER_HALF)).ravel()

    table = {
        "event": np.repeat(frames.event, per_chip),
        "chip": np.repeat(frames.chip, per_chip).astype(np.int16),
        "half": ident["half"][index],
        "channel": ident["channel"][index],
        "channeltype": ident["channeltype"][index],
        "adc": adc.ravel(), "adcm": adcm.ravel(), "toa": toa.ravel(),
        "tot": decompress_tot(tot).ravel(), "totflag": flags.ravel(),
        "corruption": per_slot(halves.corruption),
        "bxcounter": per_slot(((header >> 16) & 0xFFF).astype(np.uint16)),
        "eventcounter": per_slot(((header >> 10) & 0x3F).astype(np.uint8)),
        "orbitcounter": per_slot(((header >> 7) & 0x7).astype(np.uint8)),
    }
    return {name: table[name] for name in EVENT_COLUMNS}
