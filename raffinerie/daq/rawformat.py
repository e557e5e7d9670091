"""The hexactrl-sw raw format: a boost binary archive of (event, chip) records.

Layout (hexactrl-raw-format.md): a 40-byte archive header, a 5-byte class
preamble before the first object only, then 392-byte records

    event int32 | chip int32 | 41 (u64) | half 0: 41 words | 41 (u64) | half 1: 41 words | 5 x u64 0

where the final 40 zero bytes are missing after the last record in most
files. A data stream over zmq is the same byte stream cut into messages, so
files and streams are decoded by the same code: `read_frames`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from raffinerie.daq.crc import crc_of_words
from raffinerie.errors import RaffError
from raffinerie.hgcroc import CALIB_SLOT, CHANNELS_PER_HALF, HALF_WORDS, HALVES, MAX_CHIPS, RAW_FILE_HEADER_BYTES, \
    RECORD_BYTES, TAIL_BYTES

ARCHIVE_HEADER = (struct.pack("<Q", 22) + b"serialization::archive"
                  + struct.pack("<H", 10) + bytes([4, 8, 4, 8]) + struct.pack("<i", 1))
PREAMBLE = b"\x00" + struct.pack("<I", 0)  # tracking flag, class version
FIRST_OBJECT = len(ARCHIVE_HEADER) + len(PREAMBLE)  # 45
assert FIRST_OBJECT == RAW_FILE_HEADER_BYTES
IDLE_WORD = 0xACCCCCCC
# m_chip is the ROC index on the board, below hgcroc.MAX_CHIPS (the same bound
# as NChips in config.daqconfig.RUN_SETTINGS). hexactrl-sw writes it from the
# link it read, so a link error (a bit slip) never changes it [inferred]: a
# value outside 0..MAX_CHIPS-1 means the bytes are not a hexactrl record
# stream, and the file is refused, not a record dropped.

_FIELDS = [("event", "<i4"), ("chip", "<i4"), ("n0", "<u8"), ("h0", "<u4", (HALF_WORDS,)),
           ("n1", "<u8"), ("h1", "<u4", (HALF_WORDS,))]
RECORD_NO_TAIL = np.dtype(_FIELDS)                      # 352 bytes
RECORD = np.dtype(_FIELDS + [("tail", "<u8", (TAIL_BYTES // 8,))])
assert RECORD.itemsize == RECORD_BYTES, "the record dtype and hgcroc.RECORD_BYTES disagree"

# readout word of each channel slot of a half: slots 0..35 are channels
# 0..35, slot 36 the calibration channel (word 20)
CHANNEL_WORDS = np.array(list(range(2, 20)) + list(range(21, 39)) + [20])
assert len(CHANNEL_WORDS) == CHANNELS_PER_HALF + 1 and CHANNEL_WORDS[CALIB_SLOT] == 20


class RawFormatError(RaffError):
    """Bytes that are not a hexactrl raw stream."""


@dataclass
class Frames:
    """The records of a run: one row per (event, chip), both halves' words."""

    event: np.ndarray   # int32, m_event
    chip: np.ndarray    # int32, m_chip
    words: np.ndarray   # uint32, shape (records, 2, 41)

    def __len__(self) -> int:
        return len(self.event)

    @property
    def n_chips(self) -> int:
        return int(self.chip.max()) + 1 if len(self.chip) else 0


def read_frames(data, source: str = "stream") -> Frames:
    """Frames of a raw file's bytes (or of a stream's messages joined)."""
    buf = memoryview(data).cast("B")
    if len(buf) < FIRST_OBJECT:
        raise RawFormatError(f"too short for a hexactrl raw stream ({len(buf)} bytes)", file=source)
    if bytes(buf[:len(ARCHIVE_HEADER)]) != ARCHIVE_HEADER:
        raise RawFormatError(_header_problem(bytes(buf[:len(ARCHIVE_HEADER)])), file=source)
    if bytes(buf[len(ARCHIVE_HEADER):FIRST_OBJECT]) != PREAMBLE:
        raise RawFormatError("unexpected class preamble at byte 40 (tracking flag or class "
                             "version not 0)", file=source)
    frames = _fast_frames(buf, source)
    return frames if frames is not None else _general_frames(buf, source)


def _header_problem(head: bytes) -> str:
    if head[8:30] != b"serialization::archive":
        return "not a boost archive (no 'serialization::archive' signature at byte 8)"
    version = struct.unpack("<H", head[30:32])[0]
    if version != 10:
        return f"boost archive library version {version}; only version 10 is known"
    return "archive header sizes or byte order differ from hexactrl's (expected int 4, long 8, little endian)"


def _fast_frames(buf: memoryview, source: str) -> Frames | None:
    """Records at a fixed 392-byte stride; None when the checks fail."""
    body = len(buf) - FIRST_OBJECT
    full, rest = divmod(body, RECORD_BYTES)
    if rest not in (0, RECORD_NO_TAIL.itemsize):
        return None
    recs = np.frombuffer(buf, dtype=RECORD, count=full, offset=FIRST_OBJECT)
    if rest:
        last = np.frombuffer(buf, dtype=RECORD_NO_TAIL, count=1, offset=FIRST_OBJECT + full * RECORD_BYTES)
    else:
        last = np.zeros(0, dtype=RECORD_NO_TAIL)
    n = full + len(last)
    if np.any(recs["tail"]):
        return None
    for field in ("n0", "n1"):
        if np.any(recs[field] != HALF_WORDS) or np.any(last[field] != HALF_WORDS):
            return None
    event = np.concatenate([recs["event"], last["event"]])
    chip = np.concatenate([recs["chip"], last["chip"]])
    # every record is where the object-by-object reader would find it, so a bad chip is final
    if n and (chip.min() < 0 or chip.max() >= MAX_CHIPS):
        k = int(np.argmax((chip < 0) | (chip >= MAX_CHIPS)))
        raise RawFormatError(_chip_problem(int(chip[k]), FIRST_OBJECT + k * RECORD_BYTES), file=source)
    words = np.empty((n, HALVES, HALF_WORDS), dtype=np.uint32)
    words[:full, 0], words[:full, 1] = recs["h0"], recs["h1"]
    words[full:, 0], words[full:, 1] = last["h0"], last["h1"]
    return Frames(event, chip, words)


def _chip_problem(chip: int, start: int) -> str:
    return (f"the record at byte {start} is of chip {chip}; a hexaboard has chips 0 to {MAX_CHIPS - 1} "
            "(not a hexactrl record stream)")


def _general_frames(buf: memoryview, source: str) -> Frames:
    """Object by object, for streams that the fixed stride does not fit.

    Every count is checked against the bytes that remain before it is used,
    so a hostile count is an error naming its record, never a huge skip or
    allocation; the half words are copied into one buffer as they are found.
    """
    pos, size = FIRST_OBJECT, len(buf)
    half_bytes = 4 * HALF_WORDS
    events, chips = [], []
    words = bytearray()

    def ends_inside(start: int, part: str = "record") -> RawFormatError:
        return RawFormatError(f"stream ends inside the {part} at byte {start}", file=source)

    while pos < size:
        start = pos
        if size - pos < 16:
            raise ends_inside(start)
        event, chip, count = struct.unpack_from("<iiQ", buf, pos)
        if not 0 <= chip < MAX_CHIPS:
            raise RawFormatError(_chip_problem(chip, start), file=source)
        pos += 16
        for half in (0, 1):
            if half:
                if size - pos < 8:
                    raise ends_inside(start)
                (count,) = struct.unpack_from("<Q", buf, pos)
                pos += 8
            if count != HALF_WORDS:
                raise RawFormatError(f"half {half} of the record at byte {start} has {count} words; "
                                     f"only {HALF_WORDS}-word halves are known", file=source)
            if size - pos < half_bytes:
                raise ends_inside(start)
            words += buf[pos:pos + half_bytes]
            pos += half_bytes
        if size - pos >= TAIL_BYTES:
            for _ in range(5):  # five vectors hexactrl-sw leaves empty; their counts are bounded by the bytes left
                if size - pos < 8:
                    raise ends_inside(start, "tail of the record")
                (count,) = struct.unpack_from("<Q", buf, pos)
                pos += 8
                if count > (size - pos) // 4:
                    raise RawFormatError(f"a tail vector of the record at byte {start} claims {count} words; "
                                         f"{size - pos} bytes remain", file=source)
                pos += 4 * count
        elif pos != size:
            raise RawFormatError(f"{size - pos} stray bytes after the record at byte {start}", file=source)
        events.append(event)
        chips.append(chip)
    return Frames(np.array(events, dtype=np.int32), np.array(chips, dtype=np.int32),
                  np.frombuffer(words, dtype="<u4").reshape(len(events), HALVES, HALF_WORDS)
                  .astype(np.uint32, copy=False))


# --- half frames -------------------------------------------------------------

@dataclass
class Halves:
    """Header fields and quality of every half: arrays of shape (records, 2)."""

    header: np.ndarray
    crc_ok: np.ndarray
    corruption: np.ndarray

    @property
    def good(self) -> np.ndarray:
        return self.corruption == 0


def check_halves(frames: Frames) -> Halves:
    """Header check, CRC check and corruption code (format section 4) of each half."""
    n = len(frames)
    header = frames.words[:, :, 0]
    valid = ((header >> 28) == 5) & ((header & 0xF) == 5)
    syndrome = crc_of_words(frames.words.reshape(2 * n, HALF_WORDS), 40).reshape(n, 2)
    crc_ok = syndrome == 0
    corruption = (~valid).astype(np.uint8) + 2 * (~crc_ok).astype(np.uint8) \
        + ((header >> 2) & 0b11100).astype(np.uint8)
    return Halves(header, crc_ok, corruption)


def decompress_tot(raw: np.ndarray) -> np.ndarray:
    """10-bit TOT field -> 12-bit TOT (bit 9 set: 8-count steps)."""
    raw = raw.astype(np.uint16)
    return np.where(raw & 0x200, (raw & 0x1FF) << 3, raw).astype(np.uint16)


def channel_fields(frames: Frames, characterisation: np.ndarray):
    """ADC, ADC(BX-1), raw TOT, TOA and flags of the 37 channel slots.

    Arrays of shape (records, 2, 37). `characterisation[chip, half]` chooses
    the layout: characterisation mode ADC|TOT|TOA = P3|P2|P1; normal mode
    ADC = P2 unless Tc, TOT = P2 if Tc, ADC(BX-1) = P3, TOA = P1.
    """
    w = frames.words[:, :, CHANNEL_WORDS]
    p1 = (w & 0x3FF).astype(np.uint16)
    p2 = ((w >> 10) & 0x3FF).astype(np.uint16)
    p3 = ((w >> 20) & 0x3FF).astype(np.uint16)
    flags = (w >> 30).astype(np.uint8)
    char = characterisation[frames.chip][:, :, None]
    if char.all():
        return p3, np.zeros_like(p3), p2, p1, flags
    tc = flags > 1
    zero = np.zeros_like(p2)
    adc = np.where(char, p3, np.where(tc, zero, p2))
    adcm = np.where(char, zero, p3)
    tot = np.where(char | tc, p2, zero)
    return adc, adcm, tot, p1, flags


def common_mode(frames: Frames) -> tuple[np.ndarray, np.ndarray]:
    cm = frames.words[:, :, 1]
    return ((cm >> 10) & 0x3FF).astype(np.uint16), (cm & 0x3FF).astype(np.uint16)


# --- encoding ------------------------------------------------------------------

def make_header(bx: np.ndarray, event_counter: np.ndarray, orbit: np.ndarray | int = 0) -> np.ndarray:
    return (np.uint32(5 << 28) | ((np.asarray(bx, np.uint32) & 0xFFF) << 16)
            | ((np.asarray(event_counter, np.uint32) & 0x3F) << 10)
            | ((np.asarray(orbit, np.uint32) & 0x7) << 7) | np.uint32(5))


def make_channel_words(adc, tot, toa, flags) -> np.ndarray:
    """Characterisation-mode channel words: Tc Tp | ADC | TOT | TOA."""
    return ((np.asarray(flags, np.uint32) << 30) | (np.asarray(adc, np.uint32) << 20)
            | (np.asarray(tot, np.uint32) << 10) | np.asarray(toa, np.uint32))


def build_halves(header: np.ndarray, cm_word: np.ndarray, channels: np.ndarray) -> np.ndarray:
    """Complete 41-word halves (with CRC and idle word) from their parts.

    header, cm_word: shape (...,); channels: shape (..., 37) in slot order.
    """
    shape = header.shape
    words = np.zeros(shape + (HALF_WORDS,), dtype=np.uint32)
    words[..., 0] = header
    words[..., 1] = cm_word
    # CHANNEL_WORDS as three slices: a fancy-indexed store is three times slower
    words[..., 2:20], words[..., 21:39], words[..., 20] = channels[..., :18], channels[..., 18:36], channels[..., 36]
    flat = words.reshape(-1, HALF_WORDS)
    flat[:, 39] = crc_of_words(flat, 39)
    flat[:, 40] = IDLE_WORD
    return words


def encode_records(event: np.ndarray, chip: np.ndarray, words: np.ndarray,
                   first: bool = True, last: bool = True) -> bytes:
    """Raw-format bytes of records; `first` adds the archive header and preamble,
    `last` leaves out the tail of the final record, as hexactrl-sw does."""
    n = len(event)
    recs = np.zeros(n, dtype=RECORD)
    recs["event"], recs["chip"] = event, chip
    recs["n0"] = recs["n1"] = HALF_WORDS
    recs["h0"], recs["h1"] = words[:, 0], words[:, 1]
    body = recs.tobytes()
    if last and n:
        body = body[:-TAIL_BYTES]
    return (ARCHIVE_HEADER + PREAMBLE if first else b"") + body


# --- the data stream ---------------------------------------------------------

def join_messages(messages: list[bytes], source: str = "stream") -> bytes:
    """One raw file's bytes from a run's data messages.

    Every message of the stream is a complete boost archive of its own
    (zmq_pusher::sendvec starts a fresh archive per message), so each one's
    header and class preamble is checked and dropped, and the records are
    joined behind a single header, ending as a hexactrl file ends (no tail
    after the last record). Messages that the fixed record stride does not
    fit are read object by object.
    """
    bodies = []
    for k, message in enumerate(messages):
        where = f"{source}, data message {k + 1} of {len(messages)}"
        if len(message) < FIRST_OBJECT or message[:FIRST_OBJECT] != ARCHIVE_HEADER + PREAMBLE:
            frames = read_frames(message, where)  # raises with the precise problem
            bodies.append(encode_records(frames.event, frames.chip, frames.words, False, False))
            continue
        body = memoryview(message)[FIRST_OBJECT:]
        rest = len(body) % RECORD_BYTES
        if rest == RECORD_NO_TAIL.itemsize:
            bodies.append(body)
            bodies.append(bytes(TAIL_BYTES))
        elif rest == 0:
            bodies.append(body)
        else:
            frames = read_frames(message, where)
            bodies.append(encode_records(frames.event, frames.chip, frames.words, False, False))
    if not bodies:
        return ARCHIVE_HEADER + PREAMBLE
    joined = b"".join(bodies)
    return ARCHIVE_HEADER + PREAMBLE + joined[:len(joined) - TAIL_BYTES]
