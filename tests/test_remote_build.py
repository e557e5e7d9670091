"""`raff build --remote` and `raff plan --remote`: a second test stand pulls what the first took."""

from __future__ import annotations

import json

from conftest import LibraryFolder, assert_clean_error

SCAN = "- key: [roc_s0, ReferenceVoltage, 0, Calib]\n  values: [100, 200, 300]\n"
ANALYSIS = "- {name: ped, type: analysis, daq: scan, module: builtin.pedestal}\n"


def _stand(root, extra: str = ""):
    lib = LibraryFolder(root)
    return lib.main(lib.daq(parameters=SCAN, server_override="{NEvents: 10}") + ANALYSIS, extra=extra)


def test_a_second_stand_pulls_instead_of_acquiring(raff, tmp_path):
    shared = tmp_path / "shared"
    first = _stand(tmp_path / "a")
    assert raff("build", "ped", "-c", first).code == 0
    push = raff("cache", "push", str(shared), "-c", first)
    assert push.code == 0, push.err
    second = _stand(tmp_path / "b")
    plan = raff("plan", "ped", "-c", second, "--remote", shared)
    assert plan.code == 0 and "3 of its 3 points to acquire are in remote cache" in plan.out, plan.out
    doc = json.loads(raff("plan", "ped", "-c", second, "--remote", shared, "--json").out)
    assert doc["in_remote_cache"] == {"scan": 3}
    r = raff("build", "ped", "-c", second, "--remote", shared)
    assert r.code == 0, r.err
    assert "pulled from" in r.err and "3 points, 1 dataset and 1 analysis" in r.err, r.err
    assert "ped is up to date" in r.out and "backend:" not in r.err, r.out  # nothing acquired
    assert (tmp_path / "b" / "raff-out" / "ped" / "summary.csv").is_file()
    assert raff("cache", "verify", "-c", second).code == 0


def test_remote_in_the_main_config_and_a_local_entry_wins(raff, tmp_path):
    shared = tmp_path / "shared"
    first = _stand(tmp_path / "a")
    assert raff("build", "scan", "-c", first).code == 0
    assert raff("cache", "push", str(shared), "-c", first).code == 0
    second = _stand(tmp_path / "b", extra="remote: ../shared\n")
    r = raff("build", "scan", "-c", second)
    assert r.code == 0 and "scan is up to date" in r.out and "pulled from" in r.err, r.out + r.err
    third = _stand(tmp_path / "c", extra="remote: ../nowhere\n")
    assert_clean_error(raff("build", "scan", "-c", third), "nowhere")
