"""The hexactrl raw codec: round trips, CRC, both file endings, bad input."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from raffinerie.daq.crc import crc32_bytes, crc_of_words
from raffinerie.daq.rawformat import (ARCHIVE_HEADER, FIRST_OBJECT, RECORD_BYTES, RawFormatError,
                                      build_halves, check_halves, channel_fields, common_mode,
                                      decompress_tot, encode_records, make_channel_words,
                                      make_header, read_frames)
from raffinerie.daq.summary import SUMMARY_COLUMNS, event_table, summarize


def test_crc_known_answer():
    assert crc32_bytes(b"123456789") == 0x89A1897F


@given(st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=40))
def test_sliced_crc_equals_the_bytewise_reference(words):
    data = b"".join(struct.pack(">I", w) for w in words)
    assert int(crc_of_words(np.array([words], dtype=np.uint32))[0]) == crc32_bytes(data)


def test_the_long_run_path_of_the_crc_equals_the_short_run_path():
    """Above ONE_GATHER_ROWS the CRC loops over slice positions; both ways give the same CRCs."""
    from raffinerie.daq.crc import ONE_GATHER_ROWS

    words = np.random.default_rng(3).integers(0, 2**32, size=(ONE_GATHER_ROWS + 44, 41), dtype=np.uint32)
    words[::3, 5:] = 0  # rows with zero slices, as channels that never fired leave them
    long_run = crc_of_words(words, 40)
    short_runs = np.concatenate([crc_of_words(words[i:i + 100], 40) for i in range(0, len(words), 100)])
    np.testing.assert_array_equal(long_run, short_runs)
    data = b"".join(struct.pack(">I", int(w)) for w in words[7, :40])
    assert int(long_run[7]) == crc32_bytes(data)


@st.composite
def runs(draw):
    n_events = draw(st.integers(1, 6))
    n_chips = draw(st.integers(1, 3))
    n = n_events * n_chips
    ints = lambda hi, shape: np.array(draw(st.lists(st.integers(0, hi), min_size=int(np.prod(shape)),  # noqa: E731
                                                    max_size=int(np.prod(shape))))).reshape(shape)
    adc, tot, toa = ints(1023, (n, 2, 37)), ints(1023, (n, 2, 37)), ints(1023, (n, 2, 37))
    flags = ints(3, (n, 2, 37))
    cm = ints(2**20 - 1, (n, 2))
    counter = ints(63, (n, 2))
    event = np.repeat(np.arange(n_events, dtype=np.int32), n_chips)
    chip = np.tile(np.arange(n_chips, dtype=np.int32), n_events)
    words = build_halves(make_header(44, counter), cm.astype(np.uint32),
                         make_channel_words(adc, tot, toa, flags))
    return event, chip, words, (adc, tot, toa, flags, cm)


@settings(max_examples=60, deadline=None)
@given(runs(), st.booleans())
def test_encode_then_decode_is_the_identity(run, with_tail):
    event, chip, words, (adc, tot, toa, flags, cm) = run
    data = encode_records(event, chip, words, last=not with_tail)
    frames = read_frames(data)
    assert np.array_equal(frames.event, event) and np.array_equal(frames.chip, chip)
    assert np.array_equal(frames.words, words)
    assert check_halves(frames).good.all()
    char = np.ones((frames.n_chips, 2), dtype=bool)
    a, _, t, o, f = channel_fields(frames, char)
    assert np.array_equal(a, adc) and np.array_equal(t, tot) and np.array_equal(o, toa)
    assert np.array_equal(f, flags)
    cm0, cm1 = common_mode(frames)
    assert np.array_equal((cm0.astype(np.int64) << 10) | cm1, cm & 0xFFFFF)


@settings(max_examples=60, deadline=None)
@given(runs(), st.data())
def test_a_flipped_bit_is_caught_by_the_crc(run, data):
    event, chip, words, _ = run
    raw = bytearray(encode_records(event, chip, words))
    record = data.draw(st.integers(0, len(event) - 1))
    half = data.draw(st.integers(0, 1))
    word = data.draw(st.integers(0, 39))       # words 0..39 are covered by the CRC
    bit = data.draw(st.integers(0, 31))
    offset = FIRST_OBJECT + record * RECORD_BYTES + 16 + half * 172 + 4 * word + bit // 8
    raw[offset] ^= 1 << (bit % 8)
    halves = check_halves(read_frames(bytes(raw)))
    assert not halves.crc_ok[record, half]
    assert halves.corruption[record, half] >= 2
    assert halves.good.sum() == 2 * len(event) - 1


def test_both_file_endings_and_the_general_reader():
    event = np.repeat(np.arange(4, dtype=np.int32), 3)
    chip = np.tile(np.arange(3, dtype=np.int32), 4)
    words = build_halves(make_header(44, np.zeros((12, 2), int)), np.zeros((12, 2), np.uint32),
                         np.zeros((12, 2, 37), np.uint32))
    short = encode_records(event, chip, words, last=True)
    long = encode_records(event, chip, words, last=False)
    assert len(long) - len(short) == 40
    for data in (short, long):
        assert np.array_equal(read_frames(data).words, words)
    # a non-empty "tail vector" defeats the fixed stride; the general reader copes
    odd = bytearray(long)
    tail = FIRST_OBJECT + RECORD_BYTES - 40
    odd[tail:tail + 8] = struct.pack("<Q", 1)
    odd[tail + 8:tail + 8] = b"\0\0\0\0"
    assert np.array_equal(read_frames(bytes(odd)).words, words)


def test_bad_streams_are_refused_with_a_reason():
    with pytest.raises(RawFormatError, match="too short"):
        read_frames(b"\0" * 10)
    with pytest.raises(RawFormatError, match="not a boost archive"):
        read_frames(b"\0" * 100)
    bad_version = bytearray(ARCHIVE_HEADER + b"\0" * 5)
    bad_version[30] = 17
    with pytest.raises(RawFormatError, match="library version 17"):
        read_frames(bytes(bad_version))
    event, chip = np.array([0], np.int32), np.array([0], np.int32)
    words = np.zeros((1, 2, 41), np.uint32)
    data = encode_records(event, chip, words)
    with pytest.raises(RawFormatError, match="ends inside the record"):
        read_frames(data[:-30])
    wide = bytearray(data)
    wide[FIRST_OBJECT + 8:FIRST_OBJECT + 16] = struct.pack("<Q", 43)
    with pytest.raises(RawFormatError, match="43 words"):
        read_frames(bytes(wide))


def test_tot_decompression():
    raw = np.array([0, 1, 511, 512, 513, 0x3FF])
    assert list(decompress_tot(raw)) == [0, 1, 511, 0, 8, 4088]


def test_summary_definitions_on_a_small_run():
    # one chip, 5 events, ADC of channel 0 = 10, 11, 12, 13, 20; one corrupt half
    n = 5
    adc = np.full((n, 2, 37), 100)
    adc[:, 0, 0] = [10, 11, 12, 13, 20]
    toa = np.zeros((n, 2, 37), int)
    toa[:, 0, 1] = [0, 5, 7, 0, 9]
    words = build_halves(make_header(44, np.zeros((n, 2), int)), np.zeros((n, 2), np.uint32),
                         make_channel_words(adc, np.zeros_like(adc), toa, np.zeros_like(adc)))
    words[4, 1, 5] ^= 1  # event 4, half 1: CRC error
    frames = read_frames(encode_records(np.arange(n, dtype=np.int32), np.zeros(n, np.int32), words))
    table = summarize(frames, np.ones((1, 2), bool))
    assert list(table) == SUMMARY_COLUMNS and len(table["chip"]) == 78
    assert table["n_events"][0] == 5 and table["n_events"][39] == 4
    values = np.array([10, 11, 12, 13, 20])
    assert table["adc_mean"][0] == values.mean()
    assert np.isclose(table["adc_stdd"][0], values.std())
    assert table["adc_median"][0] == 12
    assert table["adc_iqr"][0] == np.quantile(values, 0.75) - np.quantile(values, 0.25)
    assert table["toa_efficiency"][1] == 0.6 and table["toa_mean"][1] == 7.0
    assert np.isnan(table["tot_mean"][0])
    events = event_table(frames, np.ones((1, 2), bool))
    assert len(events["adc"]) == n * 78
    assert list(events["corruption"][78 * 4 + 39:78 * 5]) == [2] * 39


def _reference_summary(frames, characterisation, n_chips):
    """Row by row with numpy's own statistics: what `summarize` must equal."""
    from raffinerie.daq.summary import _slot_values

    good = check_halves(frames).good
    adc, tot, toa = _slot_values(frames, characterisation)
    tot_values = decompress_tot(tot)
    rows = {name: [] for name in ("n", "adc", "tot", "toa", "overflow")}
    for chip in range(n_chips):
        mine = (frames.chip == chip)
        for half in (0, 1):
            keep = mine & good[:, half]
            for slot in range(39):
                a, t, o = adc[keep, half, slot], tot[keep, half, slot], toa[keep, half, slot]
                rows["n"].append(len(a))
                rows["adc"].append(a.astype(float))
                rows["tot"].append(tot_values[keep, half, slot][(t > 0) & (t != 0x3FF)].astype(float))
                rows["toa"].append(o[o > 0].astype(float))
                rows["overflow"].append(int((t == 0x3FF).sum()))
    return rows


@st.composite
def messy_runs(draw):
    """Runs with corrupt halves, chips out of order, TOT overflows and both modes."""
    n_chips = draw(st.integers(1, 3))
    n = draw(st.integers(1, 12))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    narrow = draw(st.booleans())  # few distinct values: ties everywhere
    hi = 4 if narrow else 1024
    adc, toa = rng.integers(0, hi, (n, 2, 37)), rng.integers(0, hi, (n, 2, 37))
    tot = rng.choice([0, 1, 5, 511, 512, 600, 0x3FE, 0x3FF], (n, 2, 37)) if narrow \
        else rng.integers(0, 1024, (n, 2, 37))
    flags = rng.integers(0, 4, (n, 2, 37))
    chip = rng.integers(0, n_chips, n).astype(np.int32)
    chip[:n_chips] = np.arange(n_chips)[:n]
    words = build_halves(make_header(44, np.zeros((n, 2), int)), rng.integers(0, 2**20, (n, 2)).astype(np.uint32),
                         make_channel_words(adc, tot, toa, flags))
    bad = rng.random((n, 2)) < draw(st.sampled_from([0.0, 0.3]))
    words[bad, 7] ^= 1
    modes = rng.random((n_chips, 2)) < 0.5
    return read_frames(encode_records(np.arange(n, dtype=np.int32), chip, words)), modes, max(chip) + 1


@settings(max_examples=80, deadline=None)
@given(messy_runs())
def test_summary_equals_numpy_statistics_row_by_row(run):
    frames, modes, n_chips = run
    table = summarize(frames, modes)
    ref = _reference_summary(frames, modes, n_chips)
    assert list(table["n_events"]) == ref["n"]
    assert list(table["tot_overflow"]) == ref["overflow"]
    for q in ("adc", "tot", "toa"):
        for row, values in enumerate(ref[q]):
            if not len(values):
                assert np.isnan(table[f"{q}_mean"][row]) and np.isnan(table[f"{q}_median"][row])
                continue
            assert table[f"{q}_mean"][row] == pytest.approx(values.mean(), rel=1e-12, abs=1e-12)
            assert table[f"{q}_stdd"][row] == pytest.approx(values.std(), rel=1e-9, abs=1e-9)
            assert table[f"{q}_median"][row] == pytest.approx(np.median(values), abs=1e-9)
            iqr = np.quantile(values, 0.75) - np.quantile(values, 0.25)
            assert table[f"{q}_iqr"][row] == pytest.approx(iqr, abs=1e-9)
        fired = np.array([len(v) for v in ref[q]])
        if q != "adc":
            n = np.array(ref["n"])
            extra = np.array(ref["overflow"]) if q == "tot" else 0
            with np.errstate(invalid="ignore", divide="ignore"):
                assert np.allclose(table[f"{q}_efficiency"], (fired + extra) / n, equal_nan=True)
