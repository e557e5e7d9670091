"""YAML as users write it (issue 23, item 3): a scalar whose meaning is clear is taken as meant.

YAML reads `generation: 2021` as a number and keeps `port: "6000"` a string;
where the schema allows one reading, that is the value, and the points have
the keys of the library written with the exact types. A value with no clear
reading stays an error naming its file, line and field.
"""

from __future__ import annotations

import pytest

from conftest import assert_clean_error
from test_dataset_forms import _points

from raffinerie.config.daqconfig import Generation, run_settings_as_meant
from raffinerie.config.network import load_network
from raffinerie.errors import ConfigErrors

HOSTS = "target: {hostname: localhost, port: 5555}\n"
SCAN = "- key: [roc_s0, ReferenceVoltage, 0, Calib]\n  values: [10, 20]\n"


def test_a_network_file_with_unquoted_generation_and_quoted_numbers_loads(tmp_path):
    path = tmp_path / "network.yaml"
    path.write_text('server: {hostname: hexactrl, port: "6000"}\n' + HOSTS
                    + 'generation: 2021\ntimeout: "20"\n')
    net = load_network(path)
    assert net.generation is Generation.Y2021
    assert net.server.port == 6000 and isinstance(net.server.port, int)
    assert net.timeout == 20.0


@pytest.mark.parametrize("line, message", [
    ("generation: 2022\n", "must be one of menus, 2021; got int 2022"),
    ('server: {hostname: h, port: "60a0"}\n', "expected an integer, got the string '60a0'"),
    ('server: {hostname: h, port: "0"}\n', "must be >= 1"),
    ('timeout: "soon"\n', "expected a number, got the string 'soon'"),
])
def test_a_scalar_without_a_clear_reading_stays_an_error(tmp_path, line, message):
    path = tmp_path / "network.yaml"
    server = "" if line.startswith("server") else "server: {hostname: h, port: 6000}\n"
    path.write_text(server + HOSTS + line)
    with pytest.raises(ConfigErrors) as caught:
        load_network(path)
    assert any(message in d.message and d.file == path and d.line for d in caught.value.diagnostics), \
        [str(d) for d in caught.value.diagnostics]


def test_quoted_numbers_in_a_library_have_the_keys_of_plain_numbers(libdir, tmp_path):
    plain = libdir.main(libdir.daq(parameters=SCAN, extra="repeat: 2\n", server_override="{NEvents: 5}"))
    exact = [p.all_keys() for p in [_points(plain, "scan")[1]]][0]
    libdir.write("defaults/daq.yaml", 'server: {NChips: "3", NEvents: "100", zmqPushPull_port: "8888"}\n'
                                      "client: {hw_type: LD, serverIP: localhost, data_push_port: 8888}\n")
    quoted = libdir.main(libdir.daq(parameters=SCAN, extra='repeat: "2"\n', server_override='{NEvents: "5"}'))
    points = _points(quoted, "scan")[1]
    assert points.total == 4 and points.all_keys() == exact


def test_quoted_run_settings_are_read_in_every_menu():
    daq = {"server": {"active_menu": "a", "NEvents": "7",
                      "menus": {"a": {"NEvents": "1000", "bxCalib": "10"}, "b": "not a menu"}}}
    mended = run_settings_as_meant(daq)
    assert mended["server"]["menus"]["a"] == {"NEvents": 1000, "bxCalib": "10"}  # only run settings
    assert mended["server"]["NEvents"] == 7 and mended["server"]["menus"]["b"] == "not a menu"
    assert daq["server"]["menus"]["a"]["NEvents"] == "1000"  # the cached document is not changed
    assert run_settings_as_meant({"server": {"NEvents": "1e3"}})["server"]["NEvents"] == "1e3"


def test_unclear_values_in_a_library_are_errors_with_their_line(raff, libdir):
    main = libdir.main(libdir.daq(parameters=SCAN, extra='repeat: "2.5"\n'))
    assert_clean_error(raff("validate", "-c", main),
                       "main.yaml:8: procedure 'scan': repeat: expected an integer, got the string '2.5'")
    libdir.write("defaults/daq.yaml", 'server: {NChips: 3, NEvents: "ten"}\nclient: {hw_type: LD}\n')
    main = libdir.main(libdir.daq(parameters=SCAN))
    assert_clean_error(raff("plan", "scan", "-c", main),
                       "daq.yaml:1: server.NEvents: NEvents: 'ten' is not a whole number from 1 to 10,000,000")
