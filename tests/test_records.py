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
    with pytest.raises(RaffError, match="of a newer raffinerie"):
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


def test_the_store_refuses_an_entry_record_of_a_newer_format(tmp_path):
    from raffinerie.store.store import Store

    store = Store(tmp_path / "cache")
    key = bytes(range(32))
    store.commit("analyses", key, lambda folder, digests: (folder / "meta.json").write_text(
        json.dumps(analysis_record("ped", {}, {}, 1.0) | {"format": FORMAT + 1})))
    with pytest.raises(RaffError, match="of a newer raffinerie") as caught:
        store.meta("analyses", key)
    assert "meta.json" in str(caught.value)


def test_cache_ls_names_a_build_record_it_cannot_read(raff, tmp_path):
    from pathlib import Path

    main = Path(__file__).resolve().parent.parent / "examples" / "main_config.yaml"
    records = tmp_path / "cache" / "names" / "datasets"
    records.mkdir(parents=True)
    (records / "scan.json").write_text("{cut short")
    result = raff("cache", "ls", "-c", main, "--cache", tmp_path / "cache")
    assert result.code == 0 and "Traceback" not in result.out + result.err, result.err
    assert f"dataset scan: an unreadable build record ({records / 'scan.json'})" in result.out
