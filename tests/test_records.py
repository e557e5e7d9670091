"""The records of cache entries (meta.json): one builder per kind, a format version checked on read."""

from __future__ import annotations

import json

import pytest

from raffinerie.errors import RaffError
from raffinerie.records import FORMAT, DatasetLayout, MeasurementRecord, analysis_record, check_format, \
    dataset_record, dataset_shape


def _measurement(**extra) -> MeasurementRecord:
    return MeasurementRecord(procedure="scan", index=3, identity="LD-1", mode="summary", repeat=0,
                             coordinates={"Calib": 10}, daq={"server": {}}, start=1.0, end=2.0,
                             raw_bytes=392, **extra)


def test_acquired_and_imported_measurements_have_the_same_fields_but_their_origin():
    acquired = _measurement(target_diff={}).with_run(5, 0, []).meta()
    imported = _measurement(imported_from="/runs/run_1.raw").with_run(5, 0, []).meta()
    assert acquired["kind"] == imported["kind"] == "measurement" and acquired["format"] == FORMAT
    assert set(acquired) - {"target_diff"} == set(imported) - {"imported_from"}
    assert acquired["target_diff"] == {} and "imported_from" not in acquired  # empty, but set
    assert (acquired["events"], acquired["corrupt_halves"], acquired["corruption"]) == (5, 0, [])


def test_a_record_without_a_format_is_of_format_1_and_a_newer_one_is_refused(tmp_path):
    old = {"kind": "dataset", "procedure": "scan"}
    assert check_format(old, tmp_path) is old
    assert check_format(dataset_record("scan", ["ab"], []), tmp_path)["format"] == FORMAT
    with pytest.raises(RaffError, match="newer than this raffinerie"):
        check_format({"format": FORMAT + 1}, tmp_path)
    with pytest.raises(RaffError, match="not a format"):
        check_format({"format": "2"}, tmp_path)


def test_dataset_and_analysis_records_are_plain_json():
    record = dataset_record("scan", ["aa", "bb"], ["Calib"], board="LD-1", take=2)
    shape = dataset_shape(DatasetLayout.GRID, 156, ["chip", "adc_median"], 2)
    text = json.dumps({**record, **shape})
    assert json.loads(text) == {"kind": "dataset", "format": FORMAT, "procedure": "scan", "points": 2,
                                "point_keys": ["aa", "bb"], "axes": ["Calib"], "board": "LD-1", "take": 2,
                                "layout": "grid", "rows": 156, "columns": ["chip", "adc_median"]}
    assert "board" not in dataset_record("scan", [], [], board=None) and "take" not in dataset_record("s", [], [])
    analysis = analysis_record("ped", {"dataset": "aa"}, {"summary": "summary.csv"}, 1.23456, when=5.0)
    assert analysis == {"kind": "analysis", "format": FORMAT, "procedure": "ped", "inputs": {"dataset": "aa"},
                        "outputs": {"summary": "summary.csv"}, "seconds": 1.235, "time": 5.0}
