"""HGCROCv3 and hexaboard facts: one home for the numbers every layer uses.

A bottom-layer module (no numpy: `raff plan` and `validate` import it), so
the raw format, the summary, the emulator, the planner and the analyses agree
by construction. Sources: hgcroc-physics.md (chip), hexactrl-raw-format.md
(records, summary rows), and the hexactrl-sw sources it cites.

An HD hexaboard is 6 chips where an LD one is 3: nothing below depends on
the chip count except `CHIPS_PER_BOARD`.
"""

from __future__ import annotations

import re

# -- one chip -------------------------------------------------------------------------------
HALVES = 2                    # two digital halves per chip, each its own readout link
CHANNELS_PER_HALF = 36        # readout channels 0..35 of a half (hgcroc-physics.md)
CHANNELS_PER_CHIP = HALVES * CHANNELS_PER_HALF          # 72
CALIB_SLOT = CHANNELS_PER_HALF                          # slot 36 of a half: its calibration channel
CM_SLOTS = (CALIB_SLOT + 1, CALIB_SLOT + 2)             # slots 37, 38: the two common-mode words
SLOTS_PER_HALF = CALIB_SLOT + 1 + len(CM_SLOTS)         # 39 rows a half in the summary table
ANALOG_SLOTS_PER_HALF = CALIB_SLOT + 1                  # 37 analogue front ends a half (no CM)
ROWS_PER_CHIP = HALVES * SLOTS_PER_HALF                 # 78 summary rows a chip

# channeltype of a summary row (hexactrl-raw-format.md, section 5)
CHANNELTYPE_CHANNEL, CHANNELTYPE_CALIB, CHANNELTYPE_CM = 0, 1, 100

# the blocks of a chip's target config by how many it has: one per channel slot, one per half, one
CHANNEL_BLOCKS = ("ch", "calib", "cm")
HALF_BLOCKS = ("DigitalHalf", "GlobalAnalog", "ReferenceVoltage", "MasterTdc")
GLOBAL_BLOCKS = ("Top",)

# parameter-register slots of a chip, in the order the register tables use them:
# 72 readout channels, then 2 calibration channels, then 4 common-mode inputs
CALIB_REGISTER_START = CHANNELS_PER_CHIP                # 72
CM_REGISTER_START = CALIB_REGISTER_START + HALVES       # 74
REGISTER_SLOTS = CM_REGISTER_START + HALVES * len(CM_SLOTS)   # 78

# -- one board ------------------------------------------------------------------------------
# ROCs on a hexaboard (hgcroc-physics.md): the LD boards of the test stands have 3, HD ones 6.
CHIPS_PER_BOARD = {"LD": 3, "HD": 6}
DEFAULT_BOARD = "LD"
DEFAULT_CHIPS = CHIPS_PER_BOARD[DEFAULT_BOARD]
MAX_CHIPS = max(CHIPS_PER_BOARD.values())               # m_chip of a raw record is below this


def board_for_chips(n_chips: int) -> str:
    """The board type that reads `n_chips` ROCs: LD up to its 3, HD above."""
    return DEFAULT_BOARD if n_chips <= CHIPS_PER_BOARD[DEFAULT_BOARD] else "HD"

_CHIP_NAME = re.compile(r"roc_s([0-9]+)")


def chip_name(chip: int) -> str:
    """The name hexactrl-sw gives chip `chip` in a target configuration: roc_s0, roc_s1, ..."""
    return f"roc_s{chip}"


def chip_index(name) -> int | None:
    """The index of a chip name (`roc_s2` -> 2); None for anything that is not one."""
    m = _CHIP_NAME.fullmatch(str(name))
    return int(m.group(1)) if m else None


def chip_names(n_chips: int) -> list[str]:
    return [chip_name(c) for c in range(n_chips)]


# -- raw records (hexactrl-raw-format.md, section 3) ----------------------------------------
HALF_WORDS = 41               # 32-bit words a half sends per event: header, CM, 36 + calib, CRC...
TAIL_BYTES = 40               # the five uint64 after the second half
# m_event, m_chip (int32 each), then per half a uint64 count and its words, then the tail
RECORD_BYTES = 4 + 4 + HALVES * (8 + 4 * HALF_WORDS) + TAIL_BYTES   # 392
RAW_FILE_HEADER_BYTES = 45    # ROOT archive header and the object preamble before the first record

# -- tables: (column, numpy dtype) in the order they are written ------------------------------
SUMMARY_DTYPES = (
    ("chip", "i2"), ("half", "i1"), ("channel", "i2"), ("channeltype", "i2"), ("n_events", "i4"),
    ("adc_median", "f8"), ("adc_iqr", "f8"), ("tot_median", "f8"), ("tot_iqr", "f8"),
    ("toa_median", "f8"), ("toa_iqr", "f8"),
    ("adc_mean", "f8"), ("adc_stdd", "f8"), ("tot_mean", "f8"), ("tot_stdd", "f8"),
    ("toa_mean", "f8"), ("toa_stdd", "f8"),
    ("tot_efficiency", "f8"), ("tot_efficiency_error", "f8"),
    ("toa_efficiency", "f8"), ("toa_efficiency_error", "f8"),
    ("tot_overflow", "i4"),
)
EVENT_DTYPES = (
    ("event", "i4"), ("chip", "i2"), ("half", "i1"), ("channel", "i2"), ("channeltype", "i2"),
    ("adc", "u2"), ("adcm", "u2"), ("toa", "u2"), ("tot", "u2"), ("totflag", "u1"),
    ("corruption", "u1"), ("bxcounter", "u2"), ("eventcounter", "u1"), ("orbitcounter", "u1"),
)
SUMMARY_COLUMNS = [name for name, _ in SUMMARY_DTYPES]
EVENT_COLUMNS = [name for name, _ in EVENT_DTYPES]


def _row_bytes(dtypes) -> int:
    return sum(int(code[1:]) for _, code in dtypes)


SUMMARY_ROW_BYTES = _row_bytes(SUMMARY_DTYPES)          # 143
EVENT_ROW_BYTES = _row_bytes(EVENT_DTYPES)              # 25
