"""Several boards in one build, each on its own `raff emulator`; one failing board stops only itself."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

from raffinerie.config.daqconfig import Generation
from raffinerie.emulator.process import EmulatorProcess

SCAN = "- key: [[roc_s0, roc_s1, roc_s2], ReferenceVoltage, [0, 1], Calib]\n  range: {start: 0, stop: %d, step: 100}\n"


def network(path: Path, emu: EmulatorProcess, board: str) -> Path:
    p = emu.ports
    path.write_text(yaml.safe_dump({
        "server": {"hostname": "127.0.0.1", "port": p["server"]},
        "target": {"hostname": "127.0.0.1", "port": p["target"]},
        "data": {"hostname": "127.0.0.1", "port": p["data"]}, "board": board, "timeout": 2}))
    return path


def journal(cache: Path) -> list[dict]:
    path = cache / "journal.jsonl"
    return [json.loads(l) for l in path.read_text().splitlines()] if path.exists() else []


def test_two_boards_build_their_own_points_datasets_and_outputs(libdir, raff, tmp_path):
    libdir.write("analyses/count.py", """\
class count:
    def __init__(self, parameters):
        pass
    def output(self):
        return {"summary": "summary.csv", "plots": [], "calibration": None}
    def run(self, data, output_dir):
        data.groupby("board").size().to_csv(output_dir / "summary.csv")
""")
    main = libdir.main(libdir.daq(parameters=SCAN % 300) + "- {name: count, type: analysis, daq: scan}\n")
    cache = libdir.root / ".raffinerie-cache"
    with EmulatorProcess(seed=1, generation=Generation.Y2021) as a, \
            EmulatorProcess(seed=2, generation=Generation.Y2021) as b:
        nets = [network(tmp_path / "a.yaml", a, "LD-A"), network(tmp_path / "b.yaml", b, "LD-B")]
        args = ["--network", nets[0], "--network", nets[1]]
        r = raff("build", "count", "-c", main, *args)
        assert r.code == 0, r.out + r.err
        assert "LD-A" in r.out and "LD-B" in r.out
        again = raff("build", "count", "-c", main, *args)
        assert again.code == 0 and again.out.count("up to date") == 2, again.out
        plan = raff("plan", "scan", "-c", main, *args)
        assert plan.code == 0 and "LD-A" in plan.out and "LD-B" in plan.out
    acquired = [e for e in journal(cache) if e["event"] == "acquired"]
    assert len(acquired) == 6 and len({e["key"] for e in acquired}) == 6  # 3 points on each board
    for board in ("LD-A", "LD-B"):
        summary = pd.read_csv(libdir.root / "raff-out" / "count" / board / "summary.csv")
        assert summary.iloc[0, 0] == board and summary.iloc[0, 1] == 3 * 234
        data = raff("export", "scan", "-c", main, "--network", tmp_path / f"{board[-1].lower()}.yaml",
                    "-o", tmp_path / f"{board}.csv")
        assert data.code == 0, data.err
        assert set(pd.read_csv(tmp_path / f"{board}.csv").board) == {board}


def test_a_failing_board_stops_only_itself(libdir, tmp_path):
    main = libdir.main(libdir.daq(parameters=SCAN % 1200, server_override="{NEvents: 300}"))
    cache = libdir.root / ".raffinerie-cache"
    good = EmulatorProcess(seed=1, generation=Generation.Y2021, extra_args=["--trigger-rate", "3000"]).start()
    bad = EmulatorProcess(seed=2, generation=Generation.Y2021, extra_args=["--trigger-rate", "3000"]).start()
    try:
        nets = [network(tmp_path / "a.yaml", good, "LD-A"), network(tmp_path / "b.yaml", bad, "LD-B")]
        env = {k: v for k, v in os.environ.items() if k not in ("RAFF_CACHE", "RAFF_CONFIG")}
        proc = subprocess.Popen([sys.executable, "-m", "raffinerie", "build", "scan", "-c", str(main),
                                 "--network", str(nets[0]), "--network", str(nets[1])], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(journal(cache)) < 3:
            time.sleep(0.05)
        os.kill(bad.pid, signal.SIGKILL)  # board B's hexacontroller goes away mid-build
        out, err = proc.communicate(timeout=120)
    finally:
        good.stop()
        bad.stop()
    assert proc.returncode == 3, out + err
    assert "LD-B" in err and "failed" in err and "Traceback" not in err
    keys = [e["key"] for e in journal(cache) if e["event"] == "acquired"]
    assert len(keys) == len(set(keys))
    assert "LD-A: scan: 12 points acquired" in out  # board A finished all its points
