"""Issue 27, items 5, 6 and 9: damaged cache entries are never used; gc never collects another
board's points; number options outside their range are refused before anything runs.

Every test is an attack or a fault from outside: bytes of a cached file changed on disk, a
cache built on several boards, a command line with NaN in it. Real files, real `raff`
subprocesses, the embedded emulator.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_clean_error

SCAN = "- key: [[roc_s0, roc_s1, roc_s2], ReferenceVoltage, [0, 1], Calib]\n  range: {start: 0, stop: 300, step: 100}\n"

MEAN = '''\
import os


class mean(object):
    """Writes the mean adc_mean of the dataset: it shows any value changed on the way."""

    def __init__(self, parameters):
        pass

    def output(self):
        return {"summary": "summary.csv", "plots": [], "calibration": None}

    def run(self, data, output_dir):
        with open(os.path.join(output_dir, "summary.csv"), "w") as f:
            f.write("adc_mean\\n%r\\n" % float(data.adc_mean.sum()))
'''


def journal(cache: Path, event: str) -> list[dict]:
    path = cache / "journal.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [e for e in map(json.loads, lines) if e["event"] == event]


def dataset_entry(cache: Path) -> Path:
    (entry,) = list((cache / "datasets").glob("*/*"))
    return entry


def flip_chunk(entry: Path, column: str = "adc_mean") -> Path:
    """Flip one bit inside the first chunk's stored bytes (not the shard index at the end)."""
    chunk = sorted(p for p in (entry / "data.zarr" / column / "c").rglob("*") if p.is_file())[0]
    data = bytearray(chunk.read_bytes())
    data[len(data) // 4] ^= 0x04
    chunk.write_bytes(bytes(data))
    return chunk


def scan_with_analysis(libdir) -> Path:
    libdir.write("analyses/mean.py", MEAN)
    return libdir.main(libdir.daq(parameters=SCAN) + "- {name: mean, type: analysis, daq: scan}\n")


def true_sum(raff, main: Path, tmp_path: Path) -> float:
    import pandas as pd

    out = tmp_path / "clean.csv"
    assert raff("export", "scan", "-c", main, "-o", out).code == 0
    return float(pd.read_csv(out).adc_mean.sum())


# -- item 5: a flipped bit in a dataset chunk -----------------------------------------------

def test_a_flipped_bit_in_a_stored_chunk_raises_on_read(tmp_path):
    from raffinerie.store.dataset import Dataset, DatasetWriter

    writer = DatasetWriter(tmp_path / "data.zarr", "grid", 256, 78, {"procedure": "p"})
    values = np.arange(256 * 78, dtype=np.float64).reshape(256, 78)
    writer.block("adc_mean", 0, values)
    writer.close(["adc_mean"])
    flip_chunk(tmp_path)
    with pytest.raises(ValueError, match="checksum"):
        Dataset(tmp_path / "data.zarr").to_columns(["adc_mean"])


@pytest.mark.parametrize("command", ["show", "export-csv", "export-zarr"])
def test_show_and_export_never_use_a_damaged_chunk(raff, libdir, tmp_path, command):
    main = libdir.main(libdir.daq(parameters=SCAN))
    cache = libdir.root / ".raffinerie-cache"
    assert raff("build", "scan", "-c", main).code == 0
    entry = dataset_entry(cache)
    flip_chunk(entry)
    out = tmp_path / ("out.zarr" if command == "export-zarr" else "out.csv")
    r = raff("show", "scan", "-c", main) if command == "show" else raff("export", "scan", "-c", main, "-o", out)
    assert_clean_error(r, str(entry), "damaged cache entry", "moved to quarantine/")
    assert len(r.lines) == 1, r.lines
    assert not entry.exists() and not out.exists()  # nothing written from it, and it left the cache
    assert len(list((cache / "quarantine" / "datasets").iterdir())) == 1
    r = raff("build", "scan", "-c", main)  # made again from the measurements (which are checked)
    assert r.code == 0 and "0 points acquired, 1 dataset" in r.out, r.out + r.err


def test_an_analysis_never_reads_a_damaged_dataset(raff, libdir, tmp_path):
    main = scan_with_analysis(libdir)
    cache = libdir.root / ".raffinerie-cache"
    assert raff("build", "scan", "-c", main).code == 0
    expected = true_sum(raff, main, tmp_path)
    flip_chunk(dataset_entry(cache))
    r = raff("build", "mean", "-c", main)
    assert r.code == 0, r.err
    assert "Traceback" not in r.err
    damaged = [line for line in r.err.splitlines() if "damaged cache entry" in line]
    assert len(damaged) == 1 and "moved to quarantine/" in damaged[0], r.err
    assert "1 dataset and 1 analysis built" in r.out and "0 points acquired" in r.out, r.out
    got = float((libdir.root / "raff-out" / "mean" / "summary.csv").read_text().split()[1])
    assert got == expected  # the analysis saw the true values


@pytest.mark.parametrize("damage", ["delete-chunk", "add-chunk", "constant"])
def test_damage_no_checksum_sees_is_found_against_the_manifest(raff, libdir, damage):
    main = libdir.main(libdir.daq(parameters=SCAN))
    cache = libdir.root / ".raffinerie-cache"
    assert raff("build", "scan", "-c", main).code == 0
    entry = dataset_entry(cache)
    column = entry / "data.zarr" / "adc_mean" / "c"
    if damage == "delete-chunk":  # zarr would read the missing chunk as NaN
        next(p for p in column.rglob("*") if p.is_file()).unlink()
    elif damage == "add-chunk":
        (column / "7").mkdir()
        (column / "7" / "0").write_bytes(b"\0" * 64)
    else:  # a constant column lives in the metadata: one digit changed
        meta = entry / "data.zarr" / "zarr.json"
        doc = json.loads(meta.read_text())
        doc["attributes"]["constants"]["NEvents"][0] = 999
        meta.write_text(json.dumps(doc))
    r = raff("show", "scan", "-c", main)
    assert_clean_error(r, "damaged cache entry", "moved to quarantine/")
    assert len(r.lines) == 1 and not entry.exists()


def _without_checksums(entry: Path) -> None:
    """Rewrite a dataset as a raffinerie before chunk checksums did, manifest included."""
    import zarr
    from zarr.codecs import ZstdCodec

    from raffinerie.store.manifest import write as _write_manifest

    folder = entry / "data.zarr"
    old = zarr.open_consolidated(str(folder), mode="r")
    arrays = {name: (a[...], a.chunks, a.metadata.fill_value, a.metadata.dimension_names)
              for name, a in old.arrays()}
    attrs = dict(old.attrs)
    shutil.rmtree(folder)
    group = zarr.open_group(str(folder), mode="w")
    for name, (values, chunks, fill, dims) in arrays.items():
        group.create_array(name, shape=values.shape, dtype=values.dtype, chunks=chunks,
                           compressors=ZstdCodec(level=1), fill_value=fill, dimension_names=dims)[...] = values
    group.attrs.update(attrs)
    zarr.consolidate_metadata(str(folder))
    (entry / "manifest.json").unlink()
    _write_manifest(entry, {})


def test_a_dataset_of_an_older_raffinerie_is_made_again(raff, libdir, tmp_path):
    main = scan_with_analysis(libdir)
    cache = libdir.root / ".raffinerie-cache"
    assert raff("build", "scan", "-c", main).code == 0
    expected = true_sum(raff, main, tmp_path)
    entry = dataset_entry(cache)
    _without_checksums(entry)
    assert raff("cache", "verify", "-c", main).code == 0  # not damaged: sound, but unchecked
    r = raff("build", "mean", "-c", main)
    assert r.code == 0, r.err
    assert "cache entry of an older raffinerie (" in r.err and "no chunk checksums in" in r.err, r.err
    assert "1 dataset and 1 analysis built" in r.out, r.out
    assert float((libdir.root / "raff-out" / "mean" / "summary.csv").read_text().split()[1]) == expected
    assert raff("show", "scan", "-c", main).code == 0


# -- item 5: a changed calibration.yaml -----------------------------------------------------

def trim_library(libdir) -> Path:
    return libdir.main(libdir.daq("trim_scan", parameters="- key: [roc_s0, ch, 0, trim_inv]\n"
                                                          "  values: [0, 8]\n")
                       + "- {name: trim, type: analysis, daq: trim_scan, module: builtin.pedestal_trim}\n"
                       + libdir.daq("trimmed", extra="calibration: trim\n"))


def test_a_changed_calibration_is_never_laid_over_a_target(raff, libdir):
    main = trim_library(libdir)
    cache = libdir.root / ".raffinerie-cache"
    assert raff("build", "trimmed", "-c", main).code == 0
    (calibration,) = list((cache / "analyses").glob("*/*/calibration.yaml"))
    sound = calibration.read_text()
    lines = sound.splitlines()
    at = next(i for i, line in enumerate(lines) if "trim_inv:" in line)
    lines[at] = lines[at].rsplit(":", 1)[0] + ": 9"  # one setting changed on disk
    calibration.write_text("\n".join(lines) + "\n")
    acquired = len(journal(cache, "acquired"))
    r = raff("build", "trimmed", "-c", main)
    assert r.code == 0, r.err
    assert "damaged cache entry (content changed: calibration.yaml); moved to quarantine/" in r.err, r.err
    assert "Traceback" not in r.err
    assert len(journal(cache, "acquired")) == acquired  # no point acquired with trim_inv 9
    assert calibration.read_text() == sound  # the analysis made it again
    assert [e["kind"] for e in journal(cache, "quarantined")] == ["analyses"]
    assert raff("plan", "trimmed", "-c", main, "--check").code == 0


def test_small_files_of_an_entry_are_checked_when_read(raff, libdir):
    from raffinerie.store.entries import DamagedEntry
    from raffinerie.store.store import Store

    main = scan_with_analysis(libdir)
    cache = libdir.root / ".raffinerie-cache"
    assert raff("build", "mean", "-c", main).code == 0
    (meta,) = list((cache / "analyses").glob("*/*/meta.json"))
    meta.write_text(meta.read_text().replace('"seconds": ', '"seconds": 1'))
    with pytest.raises(DamagedEntry, match="content changed: meta.json"):
        Store(cache).meta("analyses", meta.parent.name)
    assert not meta.parent.exists()


def test_a_damaged_analysis_output_never_reaches_raff_out(raff, libdir):
    main = scan_with_analysis(libdir)
    cache = libdir.root / ".raffinerie-cache"
    assert raff("build", "mean", "-c", main).code == 0
    (summary,) = list((cache / "analyses").glob("*/*/summary.csv"))
    summary.write_text(summary.read_text().replace("adc_mean", "adc_mea9"))
    shutil.rmtree(libdir.root / "raff-out")
    r = raff("build", "mean", "-c", main)
    assert_clean_error(r, "damaged cache entry (content changed: summary.csv); moved to quarantine/")
    assert not (libdir.root / "raff-out" / "mean" / "summary.csv").exists()
    r = raff("build", "mean", "-c", main)
    assert r.code == 0 and "1 analysis built" in r.out, r.out + r.err
    assert "adc_mea9" not in (libdir.root / "raff-out" / "mean" / "summary.csv").read_text()


# -- item 6: gc and boards -------------------------------------------------------------------

def test_gc_never_collects_the_points_of_a_board_it_was_not_given(raff, libdir):
    main = libdir.main(libdir.daq(parameters=SCAN))
    cache = libdir.root / ".raffinerie-cache"
    assert raff("build", "scan", "-c", main, "--seed", "0", "--seed", "1").code == 0
    before = {kind: sorted(p.name for p in (cache / kind).glob("*/*")) for kind in ("measurements", "datasets")}
    assert len(before["measurements"]) == 6 and len(before["datasets"]) == 2
    r = raff("cache", "gc", "-c", main, "--yes", "--include-measurements")  # names board seed 0 only
    assert r.code == 0, r.err
    assert "emulator/model-5/seed-1" in r.out  # it says what it considers live
    after = {kind: sorted(p.name for p in (cache / kind).glob("*/*")) for kind in ("measurements", "datasets")}
    assert after == before
    # the library changes: seed 1's old points are no longer needed, but this gc does not name seed 1
    main.write_text(main.read_text().replace("stop: 300", "stop: 200"))
    r = raff("cache", "gc", "-c", main, "--yes", "--include-measurements")
    assert r.code == 0, r.err
    seed1 = [p for p in (cache / "measurements").glob("*/*") if "seed-1" in json.dumps(_attributes(p))]
    assert len(seed1) == 3, r.out
    assert "kept 1 unneeded measurement of board emulator/model-5/seed-1" in r.out, r.out
    r = raff("cache", "gc", "-c", main, "--yes", "--include-measurements", "--seed", "1")
    assert r.code == 0, r.err
    assert len(list((cache / "measurements").glob("*/*"))) == 4  # 2 needed on each board


def _attributes(entry: Path) -> dict:
    import zipfile

    with zipfile.ZipFile(entry / "measurement.zarr.zip") as zf:
        return json.loads(zf.read("zarr.json"))["attributes"]


# -- item 9: numbers on the command line --------------------------------------------------

@pytest.mark.parametrize("args, option", [
    (["build", "scan", "--max-corrupt", "nan"], "--max-corrupt"),
    (["build", "scan", "--max-corrupt", "inf"], "--max-corrupt"),
    (["build", "scan", "--max-corrupt", "-1"], "--max-corrupt"),
    (["build", "scan", "--max-corrupt", "101"], "--max-corrupt"),
    (["build", "scan", "-w", "0"], "-w/--workers"),
    (["build", "scan", "-w", "-2"], "-w/--workers"),
    (["build", "scan", "--max-points", "0"], "--max-points"),
    (["plan", "scan", "--seed", "-1"], "--seed"),
    (["show", "scan", "-n", "-5"], "-n/--rows"),
    (["emulator", "--trigger-rate", "nan"], "--trigger-rate"),
    (["emulator", "--bitslip", "2"], "--bitslip"),
    (["emulator", "--server-port", "70000"], "--server-port"),
])
def test_a_number_outside_its_range_is_one_argparse_error(raff, libdir, args, option):
    main = libdir.main(libdir.daq(parameters=SCAN))
    extra = ["-c", str(main)] if args[0] != "emulator" else []
    r = raff(*args, *extra, timeout=20)
    assert r.code == 2, r.out + r.err
    assert "Traceback" not in r.err
    assert f"argument {option}: must be a " in r.err, r.err
    assert not (libdir.root / ".raffinerie-cache").exists()  # refused before anything ran


def test_a_bad_max_points_in_the_environment_is_one_error(raff, libdir):
    main = libdir.main(libdir.daq(parameters=SCAN))
    r = raff("plan", "scan", "-c", main, env={"RAFF_MAX_POINTS": "lots"})
    assert r.code == 2 and "Traceback" not in r.err and "argument --max-points" in r.err, r.err

