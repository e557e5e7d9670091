"""Decoding the real hexactrl runs (skips without ../shared/data)."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from conftest import shared

from raffinerie.daq.runs import open_raw


def reference_rows() -> dict:
    path = shared("hexactrl-timewalk", "reference_summary.csv")
    rows: dict = {}
    with open(path) as f:
        for r in csv.DictReader(f):
            key = (int(r["chip"]), int(r["half"]), int(r["channel"]), int(r["channeltype"]))
            rows.setdefault(r["file"], {})[key] = r
    return rows


def compare(table: dict, reference: dict) -> list[str]:
    """Differences from the reference: means/stds 1e-3 relative, medians and counts exact."""
    problems = []
    overflow = table.get("tot_overflow", np.zeros(len(table["chip"])))
    for i in range(len(table["chip"])):
        key = tuple(int(table[c][i]) for c in ("chip", "half", "channel", "channeltype"))
        r = reference[key]
        pairs = [("n_events", "n_events", 0), ("adc_mean", "adc_mean", 1e-3),
                 ("adc_stdd", "adc_std", 1e-3), ("adc_median", "adc_median", 0),
                 ("adc_iqr", "adc_iqr", 0), ("toa_efficiency", "toa_eff", 1e-3),
                 ("tot_efficiency", "tot_eff", 1e-3), ("toa_mean", "toa_mean_nz", 1e-3),
                 ("tot_median", "tot_median_nz", 0)]
        for ours, theirs, rel in pairs:
            if ours == "tot_median" and overflow[i] > 0:
                continue  # the reference keeps the overflow code in its median; we leave it out (below)
            value = float(table[ours][i])
            if r[theirs] == "":
                if not np.isnan(value):
                    problems.append(f"{key} {ours}: {value}, reference empty")
                continue
            expected = float(r[theirs])
            if abs(value - expected) > rel * abs(expected) + 5e-5:  # reference has 4 decimals
                problems.append(f"{key} {ours}: {value} != {expected}")
    return problems


def test_every_run_reproduces_the_reference_summary():
    rows = reference_rows()
    folder = shared("hexactrl-timewalk")
    assert len(rows) == 49
    for name, reference in sorted(rows.items()):
        table = open_raw(folder / name).summary()
        assert len(table["chip"]) == 234
        assert compare(table, reference) == [], name


def test_raw_summary_command_reproduces_the_reference(raff, tmp_path):
    rows = reference_rows()
    folder = shared("hexactrl-timewalk")
    for name in ("test_run_1.raw", "test_run_29.raw", "test_run_9.raw"):
        out = tmp_path / "summary.csv"
        result = raff("raw", "summary", folder / name, "-o", out)
        assert result.code == 0, result.err
        with open(out) as f:
            parsed = list(csv.DictReader(f))
        table = {c: np.array([float(r[c]) if r[c] != "" else np.nan for r in parsed])
                 for c in parsed[0]}
        assert "half" in table and len(parsed) == 234
        assert compare(table, rows[name]) == [], name


def test_corrupt_chip_1_events_of_run_71_are_flagged(raff):
    path = shared("hexactrl-timewalk", "test_run_71.raw")
    run = open_raw(path)
    bad = ~run.halves.good
    assert bad.sum() == 24
    assert set(run.frames.chip[bad.any(axis=1)]) == {1}
    assert sorted(set(run.frames.event[bad.any(axis=1)])) == list(range(5, 17))
    assert set(run.halves.corruption[bad]) == {7}
    result = raff("raw", "summary", path)
    assert result.code == 0
    assert "chip 1: 24 corrupt halves in 12 events (events 5-16)" in result.err
    n = {int(r["chip"]): int(r["n_events"]) for r in csv.DictReader(io.StringIO(result.out))}
    assert n[0] - n[1] == 12


def test_reference_values_of_the_format_document():
    folder = shared("hexactrl-timewalk")
    run = open_raw(folder / "test_run_1.raw")
    assert run.frames.words[0, 0, 39] == 0x78B04E34 and run.frames.words[0, 1, 39] == 0xF93E7A92
    t = run.summary()
    row = np.flatnonzero((t["chip"] == 0) & (t["channel"] == 10) & (t["channeltype"] == 0))[0]
    assert t["n_events"][row] == 518 and round(t["adc_mean"][row], 4) == 401.8398
    t9 = open_raw(folder / "test_run_9.raw").summary()
    row = np.flatnonzero((t9["chip"] == 2) & (t9["channel"] == 50) & (t9["channeltype"] == 0))[0]
    assert round(t9["toa_mean"][row], 4) == 351.9807
    # the document's 4088 median is the overflow code (0x3FF in 59.8 % of the events, mean 2748.48
    # with it): left out, the measured TOT is that of the neighbouring channels
    n, overflow = t9["n_events"][row], t9["tot_overflow"][row]
    assert n == 518 and overflow == 310 and round(overflow / n, 3) == 0.598
    assert t9["tot_median"][row] == 752 and t9["tot_efficiency"][row] == 1
    with_code = (t9["tot_mean"][row] * (n - overflow) + 4088 * overflow) / n
    assert round(with_code, 2) == 2748.48


def test_tot_overflow_code_is_counted_and_left_out_of_every_tot_statistic():
    folder = shared("hexactrl-timewalk")
    for name in ("test_run_9.raw", "test_run_26.raw", "test_run_40.raw"):
        run = open_raw(folder / name)
        table, events = run.summary(), run.events()
        good = events["corruption"] == 0
        for row in np.flatnonzero(table["tot_overflow"] > 0):
            mine = good & (events["chip"] == table["chip"][row]) & (events["channel"] == table["channel"][row]) \
                & (events["channeltype"] == table["channeltype"][row])
            tot = events["tot"][mine]
            measured = tot[(tot > 0) & (tot != 4088)]
            assert table["tot_overflow"][row] == (tot == 4088).sum(), (name, row)
            assert table["tot_median"][row] == np.median(measured), (name, row)
            assert abs(table["tot_mean"][row] - measured.mean()) < 1e-9, (name, row)
            assert table["tot_efficiency"][row] == (tot > 0).mean(), (name, row)


def test_events_command(raff, tmp_path):
    path = shared("hexactrl-timewalk", "test_run_1.raw")
    out = tmp_path / "events.csv"
    result = raff("raw", "events", path, "-o", out)
    assert result.code == 0, result.err
    with open(out) as f:
        header = f.readline().strip().split(",")
        n_rows = sum(1 for _ in f)
    assert header == ["event", "chip", "half", "channel", "channeltype", "adc", "adcm", "toa", "tot",
                      "totflag", "corruption", "bxcounter", "eventcounter", "orbitcounter"]
    assert n_rows == 518 * 234


def test_root_run_summary(raff):
    path = shared("reference", "runsummary-example.root")
    from raffinerie.daq.rootio import read_root_summary

    table = read_root_summary(path)
    assert len(table["chip"]) == 234
    assert set(np.unique(table["channeltype"])) == {0, 1, 100}
    normal = table["channeltype"] == 0
    assert set(table["half"][normal & (table["channel"] >= 36)]) == {1}
    assert 250 < np.median(table["adc_mean"][normal]) < 330
    result = raff("raw", "summary", path)
    assert result.code == 0 and result.out.startswith("chip,")


@pytest.mark.parametrize("content", [b"", b"not a raw file at all, just text" * 3])
def test_damaged_raw_files_give_one_clear_error(raff, tmp_path, content):
    path = tmp_path / "bad.raw"
    path.write_bytes(content)
    result = raff("raw", "summary", path, "--mode", "characterisation")
    assert result.code == 1 and "Traceback" not in result.err
    assert "bad.raw" in result.err


def test_missing_run_configuration_is_explained(raff, tmp_path):
    path = tmp_path / "run.raw"
    path.write_bytes(b"x" * 100)
    result = raff("raw", "summary", path)
    assert result.code == 1 and "no run configuration" in result.err and "--mode" in result.err
