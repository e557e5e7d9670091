"""Golden keys: fixed inputs give fixed digests, so that no change of a key goes unnoticed.

A key change makes every cache re-acquire (points) or rebuild (datasets,
analyses). When one of these fails, the change must be deliberate: bump the
format version it belongs to and say so in the README.
"""

from __future__ import annotations

import json

from raffinerie.config.keys import point_key

TARGET = {"roc_s0": {"ReferenceVoltage": {0: {"Calib": 100, "IntCtest": 1}}, "Top": {0: {"phase_strobe": 3}}}}
DAQ = {"server": {"NEvents": 10, "zmqPushPull_port": 8888, "l1a_generator_settings": [{"name": "A"}]},
       "client": {"serverIP": "daq-pc"}}
POD = "roc_s0:\n  ReferenceVoltage: {0: {Calib: 0, IntCtest: 0}}\n  Top: {0: {phase_strobe: 0}}\n"


def test_point_key_is_a_fixed_value():
    assert point_key(TARGET, DAQ, "LD-0042", "summary", 1).hex() == POINT


def test_dataset_key_is_a_fixed_value(raff, tmp_path):
    (tmp_path / "pod.yaml").write_text(POD)
    (tmp_path / "daq.yaml").write_text("server: {NEvents: 10, NChips: 1}\nclient: {}\n")
    (tmp_path / "main.yaml").write_text("""\
procedures:
  - name: scan
    type: daq
    target_settings: {power_on_default: ./pod.yaml}
    daq_settings: {default: ./daq.yaml}
    parameters:
      - key: [roc_s0, ReferenceVoltage, 0, Calib]
        values: [10, 20]
  - name: ped
    type: analysis
    daq: scan
    module: builtin.pedestal
    parameters: {threshold: 5}
""")
    cache = tmp_path / "cache"
    doc = json.loads(raff("plan", "ped", "-c", tmp_path / "main.yaml", "--cache", cache, "--json").out)
    keys = [p["key"] for p in doc["points"]]
    assert keys == SCAN_POINTS
    for key in keys:  # cached, with fixed manifests
        folder = cache / "measurements" / key[:2] / key
        folder.mkdir(parents=True)
        (folder / "manifest.json").write_text('{"files": {"summary/0.0": [1, "%s"]}}' % key)
    doc = json.loads(raff("plan", "ped", "-c", tmp_path / "main.yaml", "--cache", cache, "--json").out)
    nodes = {n["id"]: n["key"] for n in doc["nodes"]}
    assert nodes["dataset:scan"] == DATASET


POINT = "ea5584d75a9254334cf2b7ec6d062aa17c4189f09d25787b7359279b12fbc5fc"
# emulated points: their board is emulator/model-5/seed-0 (model 5: per-half reference-DAC and
# per-channel trim-DAC mismatches, for the tuning chain)
SCAN_POINTS = ["eabbcfa01178e29d9c8ab185aca07fdbaeebaad4fbbc38e85cade2e819582409",
               "4914656f2569270a5ee21f7a6c4b7cdb49b743e96934a807f5de2d4d592703aa"]
DATASET = "381494afaf1d5fb82c7cad5390d8a6e7aa633701718b3cedd313a4a73cf33c30"  # v3: data.zarr layout
