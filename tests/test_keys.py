"""Keys: the fast scan hasher equals the reference hash of the resolved config."""

from __future__ import annotations

import itertools

from hypothesis import given, settings, strategies as st

from raffinerie.config.keys import ScanHasher, digest, point_key
from raffinerie.config.tree import normalize, set_path

names = st.sampled_from(["a", "b", "c", "Calib", "ch", 0, 1, 2, 17])
scalars = st.one_of(st.integers(-5, 5000), st.text(max_size=4), st.booleans(), st.none(),
                    st.floats(allow_nan=False, width=32))
trees = st.recursive(scalars, lambda kids: st.one_of(
    st.dictionaries(names, kids, max_size=4), st.lists(kids, max_size=3)), max_leaves=25)
configs = st.dictionaries(names, trees, min_size=1, max_size=4)


def reference_keys(base, axes, identity="id", mode="summary", repeat=1):
    out = []
    for values in itertools.product(*(v for _, v in axes)):
        config = base
        for (places, _), value in zip(axes, values):
            for place in places:
                config = set_path(config, place, value)
        for r in range(repeat):
            out.append(point_key(config["target"], config["daq"], identity, mode, r))
    return out


paths = st.lists(names, min_size=1, max_size=3).map(tuple)


@st.composite
def scans(draw):
    target, daq = draw(configs), draw(configs)
    n_axes = draw(st.integers(0, 3))
    used, axes = [], []
    for _ in range(n_axes):
        places = []
        for _ in range(draw(st.integers(1, 3))):
            root = draw(st.sampled_from(["target", "daq"]))
            place = (root,) + draw(paths)
            # places may not nest or repeat (validation rejects that)
            if any(p[:len(place)] == place or place[:len(p)] == p for p in used + places):
                continue
            places.append(place)
        if places:
            used += places
            axes.append((places, draw(st.lists(scalars, min_size=1, max_size=3))))
    return {"target": target, "daq": daq}, axes, draw(st.integers(1, 2))


@settings(max_examples=300, deadline=None)
@given(scans())
def test_fast_keys_equal_keys_of_fully_resolved_configs(scan):
    base, axes, repeat = scan
    fast = list(ScanHasher(base, axes, "id", "summary", repeat).keys())
    assert fast == reference_keys(base, axes, repeat=repeat)


@given(configs)
def test_mapping_order_never_changes_a_key(config):
    def reverse(value):
        if isinstance(value, dict):
            return {k: reverse(value[k]) for k in reversed(list(value))}
        if isinstance(value, list):
            return [reverse(v) for v in value]
        return value

    assert digest(config) == digest(reverse(config))


@given(st.dictionaries(st.integers(0, 100), scalars, min_size=1))
def test_integer_keys_equal_their_string_form(mapping):
    as_strings = {str(k): v for k, v in mapping.items()}
    assert digest(mapping) == digest(as_strings)
    assert normalize(as_strings) == mapping


@st.composite
def tree_and_leaf(draw):
    tree = draw(st.dictionaries(names, trees, min_size=1, max_size=4))
    leaves = []

    def walk(node, path):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, path + (k,))
        elif not isinstance(node, list):
            leaves.append(path)

    walk(tree, ())
    if not leaves:
        return tree, None, None
    path = draw(st.sampled_from(leaves))
    return tree, path, draw(scalars)


@given(tree_and_leaf())
def test_changing_any_leaf_changes_the_key(case):
    tree, path, new = case
    if path is None:
        return
    old = tree
    for part in path:
        old = old[part]
    if type(old) is type(new) and old == new and repr(old) == repr(new):
        return
    assert point_key(tree, {}, "id", "summary") != point_key(set_path(tree, path, new), {}, "id", "summary")


def test_identity_mode_and_repeat_are_part_of_the_key():
    t, d = {"roc_s0": {"Top": {0: {"phase_strobe": 1}}}}, {"server": {"NEvents": 10}}
    keys = {point_key(t, d, "emu", "summary", 0), point_key(t, d, "board7", "summary", 0),
            point_key(t, d, "emu", "events", 0), point_key(t, d, "emu", "summary", 1)}
    assert len(keys) == 4


def test_values_of_different_types_differ():
    assert len({digest(v) for v in (1, "1", True, 1.0, None, [1], {"1": 1})}) == 7


@settings(max_examples=150, deadline=None)
@given(scans(), st.data())
def test_explicit_points_with_repeats_equal_the_reference(scan, data):
    base, axes, _ = scan
    if not axes:
        return
    sizes = [len(values) for _, values in axes]
    explicit = data.draw(st.lists(st.tuples(*(st.integers(0, n - 1) for n in sizes)), min_size=1, max_size=6))
    seen: dict = {}
    repeats = []
    for index in explicit:
        repeats.append(seen.get(index, 0))
        seen[index] = repeats[-1] + 1
    fast = list(ScanHasher(base, axes, "id", "summary", 1, explicit, repeats).keys())
    expected = []
    for index, r in zip(explicit, repeats):
        config = base
        for (places, values), i in zip(axes, index):
            for place in places:
                config = set_path(config, place, values[i])
        expected.append(point_key(config["target"], config["daq"], "id", "summary", r))
    assert fast == expected
