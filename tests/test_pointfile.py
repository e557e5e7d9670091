"""The measurement file: what `pointfile.write` makes is what zarr-python makes, and reads."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import zarr
from zarr.storage import ZipStore

from raffinerie.store import pointfile


def _point(events: bool, raw_size: int = 5000):
    rng = np.random.default_rng(3)
    raw = rng.integers(0, 256, raw_size, dtype=np.uint8).tobytes()
    attributes = {"key": "ab" * 32, "coordinates": {"Calib": 10}, "nested": {"a": [1, 2.5, None, "x"]}}
    summary = rng.normal(100, 3, (22, 234))
    columns = ([f"c{i}" for i in range(22)], ["<f8"] * 22)
    table = {"adc": rng.integers(0, 1024, 700).astype(np.uint16), "event": np.arange(700, dtype=np.int32),
             "flag": np.zeros(700, np.uint8), "empty": np.zeros(0, np.float64)} if events else None
    return attributes, summary, raw, table, columns


def _everything(path):
    group = zarr.open_group(ZipStore(path, mode="r"), mode="r")
    try:
        arrays = {}
        for name in ("summary", "raw"):
            arrays[name] = (group[name].metadata.to_dict(), group[name][...])
        if "events" in group:
            for name, array in group["events"].arrays():
                arrays[f"events/{name}"] = (array.metadata.to_dict(), array[...])
        return dict(group.attrs), arrays
    finally:
        group.store.close()


@pytest.mark.parametrize("events,raw_size", [(False, 5000), (True, 5000), (False, 0)])
def test_zarr_python_reads_the_direct_file_as_its_own(tmp_path, events, raw_size):
    attributes, summary, raw, table, columns = _point(events, raw_size)
    packed = pointfile.compress(raw)
    size, digest = pointfile.write(tmp_path / "direct.zip", attributes, summary, packed, len(raw), table, columns)
    pointfile.write_with_zarr(tmp_path / "zarr.zip", attributes, summary, packed, len(raw), table, columns)
    direct, reference = _everything(tmp_path / "direct.zip"), _everything(tmp_path / "zarr.zip")
    assert direct[0] == reference[0] == attributes
    assert direct[1].keys() == reference[1].keys()
    for name, (meta, values) in reference[1].items():
        assert direct[1][name][0] == meta, name
        assert np.array_equal(direct[1][name][1], values) and direct[1][name][1].dtype == values.dtype, name
    assert direct[1]["raw"][1].tobytes() == raw
    assert np.array_equal(direct[1]["summary"][1], summary)
    assert size == (tmp_path / "direct.zip").stat().st_size
    import hashlib
    assert digest == hashlib.sha256((tmp_path / "direct.zip").read_bytes()).hexdigest()
    # and raffinerie's own direct reader, every member's CRC checked
    names, dtypes, read = pointfile.read_summary(tmp_path / "direct.zip")
    assert names == columns[0] and np.array_equal(read, summary)
    assert pointfile.read_raw(tmp_path / "direct.zip") == raw
    pointfile.check(tmp_path / "direct.zip")


def test_members_are_stored_as_zarr_pythons_zipstore_stores_them(tmp_path):
    attributes, summary, raw, table, columns = _point(True)
    packed = pointfile.compress(raw)
    pointfile.write(tmp_path / "direct.zip", attributes, summary, packed, len(raw), table, columns)
    pointfile.write_with_zarr(tmp_path / "zarr.zip", attributes, summary, packed, len(raw), table, columns)
    with zipfile.ZipFile(tmp_path / "direct.zip") as a, zipfile.ZipFile(tmp_path / "zarr.zip") as b:
        mine = {i.filename: i for i in a.infolist()}
        theirs = {i.filename: i for i in b.infolist()}
        # zarr-python leaves out chunks equal to the fill value; every other member is the same
        assert set(theirs) <= set(mine)
        for name, info in theirs.items():
            assert (mine[name].compress_type, mine[name].external_attr) == (info.compress_type, info.external_attr)
            if name.endswith("zarr.json") and json.loads(b.read(name))["node_type"] == "group":
                assert json.loads(a.read(name)) == json.loads(b.read(name)), name  # not indented
            else:
                assert a.read(name) == b.read(name), name
        assert json.loads(a.read("zarr.json"))["attributes"] == attributes


def test_numpy_attribute_values_are_written_as_json(tmp_path):
    from raffinerie.store.files import json_default

    attributes, summary, raw, table, columns = _point(False)
    attributes["coordinates"] = {"Calib": np.int64(10), "phase": np.float32(0.5)}
    pointfile.write(tmp_path / "m.zip", attributes, summary, pointfile.compress(raw), len(raw), None, columns,
                    default=json_default)
    assert _everything(tmp_path / "m.zip")[0]["coordinates"] == {"Calib": 10, "phase": 0.5}


def test_a_write_that_fails_names_the_file(tmp_path):
    attributes, summary, raw, table, columns = _point(False)
    target = tmp_path / "missing" / "m.zip"
    with pytest.raises(OSError, match="cannot write") as info:
        pointfile.write(target, attributes, summary, pointfile.compress(raw), len(raw), None, columns)
    assert info.value.filename == str(target)
