"""Lines of places in YAML files: found from the event stream as composing the file finds them."""

from __future__ import annotations

import pytest

from conftest import EXAMPLES, LibraryFolder, run_raff
from raffinerie.config import yamlio

FILES = sorted(EXAMPLES.rglob("*.yaml"))

ODD = """\
base: &base {a: 1, b: [x, y]}
procedures:
  - name: one
    also: *base
    parameters:
      - key: [roc_s0, ch, 3, trim_inv]
        values: [1, 2,
                 3]
  - {name: two, nested: {deep: [[1, 2], [3, {k: v}]]}}
  - name: three
    via: *base
items: [*base, *base]
"""


def paths(doc, prefix=()):
    """Every place in the document, and some that are not there."""
    yield prefix + ("absent",)
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield prefix + (key,)
            yield from paths(value, prefix + (key,))
    elif isinstance(doc, list):
        yield prefix + (len(doc),)
        for i, value in enumerate(doc):
            yield prefix + (i,)
            yield from paths(value, prefix + (i,))


def composed(path, place, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(yamlio, "EVENT_LOOKUPS", 0)
        return yamlio.line_of(path, place)


@pytest.mark.parametrize("name", [f.name for f in FILES] + ["odd.yaml"])
def test_every_place_has_the_line_composing_gives(name, tmp_path, monkeypatch):
    if name == "odd.yaml":
        path = tmp_path / name
        path.write_text(ODD)
    else:
        path = next(f for f in FILES if f.name == name)
    doc = yamlio.load_yaml(path)
    places = list(paths(doc))
    places = places[::max(1, len(places) // 120)]   # spread over the file
    for place in places:
        try:
            by_events = yamlio._line_from_events(path, place)
        except yamlio._ThroughAlias:
            continue  # composing follows the alias (line_of does, for such a path)
        assert by_events == composed(path, place, monkeypatch), place
    # through an alias, line_of falls back to composing
    if name == "odd.yaml":
        assert yamlio.line_of(path, ("procedures", 2, "via", "b")) == 1
        assert yamlio.line_of(path, ("procedures", 0, "parameters", 0, "values", 2)) == 8
        assert yamlio.line_of(path, ("procedures", 1, "nested", "deep", 1, 1, "k")) == 9
        assert yamlio.line_of(path, ("items", 1)) == 1      # an alias item: its anchor's line
        assert yamlio.line_of(path, ("items", -1)) == 1     # counted from the end, as composing does


def test_a_procedure_of_a_large_library_is_placed_without_composing_the_file(tmp_path, monkeypatch):
    """Only the procedure asked for gets its line looked up: a warning for another costs nothing."""
    lib = LibraryFolder(tmp_path)
    wanted = lib.daq("wanted", "- key: [roc_s0, ch, 0, trim_inv]\n  values: [1]\n")
    broken = lib.daq("broken", "- key: [roc_s0, Top, 0, phase_strobe]\n  values: [16]\n")
    fillers = "".join(lib.daq(f"filler_{i}", f"- key: [roc_s0, ch, {i % 72}, trim_inv]\n  values: [1, 2]\n")
                      for i in range(300))
    main = lib.main(wanted + broken + fillers)
    result = run_raff("plan", "wanted", "-c", main)
    assert result.code == 0, result.err
    assert f"wanted: daq procedure at {main}:2" in result.out, result.out
    assert result.err.splitlines() == [
        "warning: 1 other procedure has errors (broken); raff validate lists them"]
    # in-process: no file composed, and the broken procedure's line not looked up until it is shown
    from raffinerie.config.checks import validate
    from raffinerie.config.library import load_library

    composed_files = []
    monkeypatch.setattr(yamlio, "_compose", lambda path, stamp: composed_files.append(path))
    diags = validate(load_library(main), names=["wanted"])
    (error,) = [d for d in diags if d.severity == "error"]
    assert error.entry == "broken" and "_located" not in error.__dict__ and not composed_files
    assert error.format().startswith(f"{main}:19: procedure 'broken': parameters[0].values[0]")
    assert not composed_files


def test_a_diagnostic_with_its_line_still_to_find_can_be_pickled(tmp_path):
    """Errors cross process boundaries (analysis workers, Dask): the look-up must travel too."""
    import pickle

    from raffinerie.config.library import Origin

    path = tmp_path / "lib.yaml"
    path.write_text("- name: a\n  type: daq\n  parameters:\n    - {key: x, values: [1]}\n")
    diag = Origin(path, (0, "parameters", 0, "key")).error("no such register")
    again = pickle.loads(pickle.dumps(diag.as_error())).diagnostic
    assert again == diag and again.line == diag.line == 4
