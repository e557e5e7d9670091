"""Expansion: fan-out places, Python range semantics, product order, laziness."""

from __future__ import annotations

import itertools
from pathlib import Path

from hypothesis import given, strategies as st

from raffinerie.config.expand import Axis, Scan, axis_names, expand, overlaps
from raffinerie.config.library import DaqProcedure, Origin, ScanParameter

ORIGIN = Origin(Path("lib.yaml"))


def proc(*params: ScanParameter, repeat: int = 1) -> DaqProcedure:
    return DaqProcedure("scan", ORIGIN, Path("pod.yaml"), Path("daq.yaml"),
                        parameters=list(params), repeat=repeat)


def test_list_levels_fan_out_to_every_place():
    p = ScanParameter([["roc_s0", "roc_s1", "roc_s2"], "ReferenceVoltage", [0, 1], "Calib"],
                      range(0, 2048, 32), ORIGIN)
    places = p.places()
    assert len(places) == 6
    assert ("roc_s2", "ReferenceVoltage", 1, "Calib") in places
    scan = expand(proc(p))
    assert scan.total == 64
    assert scan.axes[0].places[0] == ("target", "roc_s0", "ReferenceVoltage", 0, "Calib")


def test_first_parameter_varies_slowest():
    a = ScanParameter(["Top", 0, "phase_strobe"], [0, 4], ORIGIN)
    b = ScanParameter(["ReferenceVoltage", 0, "Calib"], range(3), ORIGIN)
    scan = expand(proc(a, b))
    assert list(scan.coordinates()) == [(0, 0), (0, 1), (0, 2), (4, 0), (4, 1), (4, 2)]


def test_daq_keys_patch_the_daq_config():
    p = ScanParameter(["daq", "server", "NEvents"], [10, 20], ORIGIN)
    assert expand(proc(p)).axes[0].places == (("daq", "server", "NEvents"),)


def test_no_parameters_is_one_point_and_repeat_multiplies():
    assert expand(proc()).total == 1
    p = ScanParameter(["x"], [1, 2, 3], ORIGIN)
    assert expand(proc(p, repeat=4)).total == 12


def test_a_million_points_are_not_materialised():
    params = [ScanParameter([f"k{i}"], range(100), ORIGIN) for i in range(3)]
    scan = expand(proc(*params))
    assert scan.total == 1_000_000
    assert scan.coordinate(999_999) == (99, 99, 99)
    assert scan.coordinate(123_456) == (12, 34, 56)


@given(st.lists(st.integers(1, 5), min_size=0, max_size=4), st.data())
def test_coordinate_i_equals_the_ith_element_of_the_product(sizes, data):
    axes = tuple(Axis(f"a{i}", (("target", f"a{i}"),), range(10 * i, 10 * i + n), ORIGIN)
                 for i, n in enumerate(sizes))
    scan = Scan(axes)
    product = list(itertools.product(*(a.values for a in axes)))
    assert scan.coordinates_total == len(product)
    i = data.draw(st.integers(0, len(product) - 1))
    assert scan.coordinate(i) == product[i]
    assert list(scan.coordinates()) == product


@given(st.integers(-50, 50), st.integers(-50, 50), st.integers(1, 7))
def test_range_is_pythons_range(start, stop, step):
    p = ScanParameter(["x"], range(start, stop, step), ORIGIN)
    assert list(expand(proc(p)).axes[0].values) == list(range(start, stop, step))


def test_axis_names_are_leaf_keys_disambiguated_by_parents():
    a = ScanParameter(["roc_s0", "ReferenceVoltage", 0, "Calib"], [1], ORIGIN)
    b = ScanParameter(["roc_s0", "Top", 0, "phase_strobe"], [1], ORIGIN)
    c = ScanParameter(["roc_s1", "ReferenceVoltage", 0, "Calib"], [1], ORIGIN)
    assert axis_names([a, b]) == ["Calib", "phase_strobe"]
    assert axis_names([a, c]) == ["roc_s0.ReferenceVoltage.0.Calib", "roc_s1.ReferenceVoltage.0.Calib"]


def test_overlapping_places_are_found():
    a = ScanParameter(["roc_s0", "Top"], [1], ORIGIN)
    b = ScanParameter(["roc_s0", "Top", 0, "phase_strobe"], [1], ORIGIN)
    c = ScanParameter(["roc_s0", "Top"], [2], ORIGIN)
    assert overlaps(expand(proc(a, b)))
    assert overlaps(expand(proc(a, c)))
    assert not overlaps(expand(proc(b)))
