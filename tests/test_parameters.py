"""The HGCROCv3 parameter table and the power-on default made from it."""

from __future__ import annotations

import io

import yaml

from conftest import EXAMPLES, shared

from raffinerie.config.parameters import load_table, table_from_regmap, write_table, TABLE_FILE
from raffinerie.config.tree import normalize


def test_table_is_the_one_made_from_the_real_register_map():
    rows = table_from_regmap(shared("reference", "HGCROC3_regmap.csv"))
    out = io.StringIO()
    write_table(rows, out)
    assert out.getvalue() == TABLE_FILE.read_text()


def test_widths_and_defaults_of_known_registers():
    table = load_table()
    p = table.parameters
    assert (p[("ReferenceVoltage", "Calib")].width, p[("ReferenceVoltage", "Calib")].default) == (12, 0)
    assert p[("Top", "phase_strobe")].width == 4
    assert p[("ch", "trim_inv")].width == 6
    assert p[("ReferenceVoltage", "Inv_vref")].default == 572
    assert p[("DigitalHalf", "IdleFrame")].default == 0xCCCCCCC
    # the usual 160 fC preamp gain is the default: Cf 4, Cf_comp 2, Rf 5
    assert [p[("GlobalAnalog", n)].default for n in ("Cf", "Cf_comp", "Rf")] == [4, 2, 5]
    assert table.instances == {"DigitalHalf": 2, "GlobalAnalog": 2, "HalfWise": 2, "MasterTdc": 2,
                               "ReferenceVoltage": 2, "Top": 1, "calib": 2, "ch": 72, "cm": 4}


def test_checks_reject_values_that_do_not_fit():
    table = load_table()
    assert table.check(("roc_s0", "ReferenceVoltage", 0, "Calib"), 4095) is None
    assert "12-bit" in table.check(("roc_s0", "ReferenceVoltage", 0, "Calib"), 5000)
    assert "12-bit" in table.check(("roc_s0", "ReferenceVoltage", 0, "Calib"), -1)
    assert "integer" in table.check(("roc_s0", "ReferenceVoltage", 0, "Calib"), True)
    assert table.check(("roc_s0", "Nonsense", 0, "Calib"), 10**9) is None


def test_example_power_on_default_is_generated_from_the_table():
    path = EXAMPLES / "defaults" / "V3LDHexaboard-poweron-default.yaml"
    doc = normalize(yaml.load(path.read_text(), Loader=yaml.CSafeLoader))
    assert doc == load_table().power_on_default()
    assert 150_000 < path.stat().st_size < 200_000
