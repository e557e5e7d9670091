"""What a newcomer reads (issue 25, items 8, 11, 12, 13): interrupt messages, counts and columns,
where each board's outputs go, and the README and emulator texts. All through the real CLI."""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, free_port, listening, run_raff

SCAN = """\
- key: [[roc_s0, roc_s1, roc_s2], ReferenceVoltage, [0, 1], Calib]
  range: {start: 0, stop: %d, step: 100}
"""
ANALYSIS = "- {name: ped, type: analysis, daq: scan, module: builtin.pedestal}\n"


def _acquired(cache: Path) -> int:
    path = cache / "journal.jsonl"
    if not path.exists():
        return 0
    return sum(json.loads(line)["event"] == "acquired" for line in path.read_text().splitlines())


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "raffinerie", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _interrupt_after(proc: subprocess.Popen, cache: Path, n: int) -> tuple[str, str]:
    deadline = time.monotonic() + 90
    while _acquired(cache) < n:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the build made no progress"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    return proc.communicate(timeout=90)


# -- item 8: Ctrl-C is not an error, and says the user's whole command ----------------------------

def test_ctrl_c_says_interrupted_and_the_whole_command_to_paste(libdir):
    libdir.main(libdir.daq("slow", parameters=SCAN % 4000, server_override="{NEvents: 600}"))  # main.yaml
    cache = libdir.root / "my cache"  # a space: the command must be quoted as a shell reads it
    given = ["build", "slow", "-c", "main.yaml", "--cache", str(cache), "--seed", "6", "-o", "outs"]  # in --help's order
    proc = _start(given, libdir.root)
    _, err = _interrupt_after(proc, cache, 3)
    assert proc.returncode == 130, err  # 128 + SIGINT, as shells expect
    line = err.strip().splitlines()[-1]
    assert line.startswith("raff: interrupted: ") and "error" not in line, err
    kept = _acquired(cache)
    assert f"{kept} points acquired in this build are kept" in line, line
    command = shlex.join(["raff", *given])
    assert f"run `{command}` again to continue" in line, line
    # pasted as it is, it finishes the build on the same board and cache
    again = run_raff(*shlex.split(command)[1:], cwd=libdir.root)
    assert again.code == 0, again.err
    assert f"{40 - kept} points acquired" in again.out and _acquired(cache) == 40


def test_ctrl_c_of_several_boards_names_their_seeds(libdir):
    main = libdir.main(libdir.daq("slow", parameters=SCAN % 4000, server_override="{NEvents: 600}"))
    cache = libdir.root / ".raffinerie-cache"
    given = ["build", "slow", "-c", str(main), "--seed", "1", "--seed", "2"]
    proc = _start(given, libdir.root)
    _, err = _interrupt_after(proc, cache, 4)
    assert proc.returncode == 130, err
    line = err.strip().splitlines()[-1]
    assert line == (f"raff: interrupted: the points acquired on 2 boards are kept; run "
                    f"`{shlex.join(['raff', *given])}` again to continue"), err


def test_the_command_to_resume_drops_force_acquire_and_keeps_the_rest():
    from raffinerie.cli.build import again_command
    from raffinerie.cli.main import build_parser

    args = build_parser().parse_args(["build", "a", "b", "-c", "x y.yaml", "--force-acquire", "-w", "2",
                                      "--network", "n1.yaml", "--network", "n2.yaml", "--readback"])
    assert again_command(args) == "raff build a b -c 'x y.yaml' --network n1.yaml --network n2.yaml -w 2 --readback"


# -- item 11: counts, repeated words, columns, ranges, ETA, report reasons --------------------------

def test_one_point_is_one_point_in_plan_build_and_report(libdir):
    main = libdir.main(libdir.daq() + ANALYSIS)
    plan = run_raff("plan", "ped", "-c", main)
    assert "1 point: 0 cached, 1 to acquire" in plan.out and "1 points" not in plan.out, plan.out
    build = run_raff("build", "ped", "-c", main)
    assert build.code == 0, build.err
    text = build.out + build.err
    # "1 points" as a count, not the tail of a rate such as "1.1 points/s"
    assert "1 point acquired, 1 dataset and 1 analysis built" in text, text
    assert not re.search(r"(?<![\d.])1 points", text), text
    assert "scan: 1/1 point," in text, text
    report = run_raff("report", "ped", "-c", main)
    assert report.code == 0, report.err
    page = (libdir.root / "raff-out" / "ped.html").read_text()
    assert "1 point: 1 cached" in page and "from 1 point." in page and "1 points" not in page


def test_plan_and_dot_do_not_repeat_the_status_as_its_reason(libdir):
    main = libdir.main(libdir.daq(parameters=SCAN % 300) + ANALYSIS)
    assert run_raff("build", "ped", "-c", main).code == 0
    tree = run_raff("plan", "ped", "-c", main).out
    assert not re.search(r"cached +cached", tree), tree
    assert re.search(r"analysis ped +cached$", tree, re.M) and "all 3 points cached" in tree, tree
    dot = run_raff("plan", "ped", "-c", main, "--dot").out
    assert "cached: cached" not in dot and 'label="analysis ped\\ncached"' in dot, dot


def test_point_listing_is_in_aligned_columns(libdir):
    main = libdir.main(libdir.daq(parameters="""\
- key: [[roc_s0, roc_s1, roc_s2], ReferenceVoltage, [0, 1], Calib]
  values: [0, 5, 1000]
- key: [[roc_s0, roc_s1, roc_s2], Top, 0, phase_strobe]
  values: [3, 12]
"""))
    assert run_raff("build", "scan", "-c", main).code == 0
    (libdir.root / "defaults" / "daq.yaml").write_text(
        (libdir.root / "defaults" / "daq.yaml").read_text().replace("NEvents: 100", "NEvents: 101"))
    out = run_raff("plan", "scan", "-c", main, "--points").out
    rows = [l for l in out.splitlines() if re.match(r"^ +\d+  [0-9a-f]{12}  ", l)]
    assert len(rows) == 6, out
    for column in ("Calib=", "phase_strobe=", "new point"):
        assert len({row.index(column) for row in rows}) == 1, (column, out)  # each starts where the others do


def test_a_scan_over_every_channel_prints_a_range(libdir):
    main = libdir.main(libdir.daq(parameters="""\
- key: [[roc_s0, roc_s1], ch, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71], trim_inv]
  values: [0, 63]
- key: [roc_s2, ch, [1, 2, 3, 7, 9, 10], trim_inv]
  values: [1, 2]
"""))
    out = run_raff("plan", "scan", "-c", main).out
    assert "sets {roc_s0,roc_s1}.ch.{0–71}.trim_inv (144 places)" in out, out
    assert "sets roc_s2.ch.{1–3,7,9,10}.trim_inv (6 places)" in out, out
    assert "0,1,2,3" not in out


def test_no_eta_before_points_were_timed(libdir):
    main = libdir.main(libdir.daq(parameters=SCAN % 4000))
    build = run_raff("build", "scan", "-c", main)
    assert build.code == 0, build.err
    first = next(l for l in build.err.splitlines() if l.startswith("scan: 1/40 points"))
    assert "ETA" not in first, build.err  # the first point carries the session's setup


def test_the_eta_comes_from_the_points_after_the_first(monkeypatch):
    import io

    from raffinerie.builder import progress as progress_module

    clock = [100.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: clock[0])
    out = io.StringIO()
    bar = progress_module.Progress(stream=out)
    bar.start("scan", 1001)
    clock[0] += 1.5          # the first point: configuring everything
    bar.step(1)
    for done in range(2, 400):
        clock[0] += 0.02     # then 50 points/s
        bar.step(done)
    lines = out.getvalue().splitlines()
    assert lines[0] == "scan: 1/1001 points"
    eta = next(l for l in lines if "ETA" in l)
    assert "50.0 points/s" in eta and re.search(r"ETA (1[0-9]|20) s$", eta), lines  # ~19 s left, not ~25 min


def test_report_gives_each_node_the_reason_its_plan_gave(libdir):
    main = libdir.main(libdir.daq(parameters=SCAN % 300, server_override="{NEvents: 100}") + ANALYSIS)
    assert run_raff("build", "ped", "-c", main).code == 0

    def reasons() -> dict[str, str]:
        assert run_raff("report", "ped", "-c", main).code == 0
        page = (libdir.root / "raff-out" / "ped.html").read_text()
        return dict(re.findall(r"<h2>(\w+ \w+)</h2>.*?reason of its last build</th><td>(.*?)</td>", page, re.S))

    assert reasons() == {"analysis ped": "not built yet", "dataset scan": "new points"}
    main.write_text(main.read_text().replace("NEvents: 100", "NEvents: 120"))
    plan = run_raff("plan", "ped", "-c", main).out
    assert "input dataset changed (daq.server.NEvents 100 → 120)" in plan, plan
    assert run_raff("build", "ped", "-c", main).code == 0
    assert reasons() == {"analysis ped": "input dataset changed (daq.server.NEvents 100 → 120)",
                         "dataset scan": "new points (daq.server.NEvents 100 → 120)"}


# -- item 12: each board's outputs in their own folder, saying whose they are -------------------

def _provenance(folder: Path) -> dict:
    return json.loads((folder / "raff-out.json").read_text())


def test_another_board_writes_its_own_folder_with_its_provenance(libdir):
    main = libdir.main(libdir.daq(parameters=SCAN % 300) + ANALYSIS)
    out = libdir.root / "raff-out" / "ped"
    assert run_raff("build", "ped", "-c", main, "--seed", "6").code == 0
    assert not (out / "summary.csv").exists()  # not where the default board's outputs go
    six = _provenance(out / "emulator-seed-6")
    assert (out / "emulator-seed-6" / "summary.csv").is_file()
    assert run_raff("build", "ped", "-c", main).code == 0
    zero = _provenance(out)
    assert (out / "summary.csv").is_file() and (out / "emulator-seed-6" / "summary.csv").is_file()
    assert six["board"] == "emulator/model-5/seed-6" and zero["board"] == "emulator/model-5/seed-0"
    for doc, seed in ((six, "6"), (zero, "0")):
        data = json.loads(run_raff("plan", "ped", "-c", main, "--json", "--seed", seed).out)
        keys = {n["id"]: n["key"] for n in data["nodes"]}
        assert doc["analysis"] == "ped" and doc["key"] == keys["analysis:ped"]
        assert doc["procedure"] == "scan" and doc["datasets"] == {"scan": keys["dataset:scan"]}
        assert doc["raffinerie"] and re.match(r"\d{4}-\d\d-\d\dT", doc["built"])
    # the no-op paths still hold for both boards, in any order, and gc sees nothing stale
    for board in (["--seed", "6"], [], ["--seed", "6"], []):
        again = run_raff("build", "ped", "-c", main, *board)
        assert again.code == 0 and "nothing it reads has changed" in again.out, (board, again.out)
    gc = run_raff("cache", "gc", "-c", main)
    assert gc.code == 0 and "output folder" not in gc.out, gc.out
    # and its report does not take the default board's page
    assert run_raff("report", "ped", "-c", main, "--seed", "6").code == 0
    assert run_raff("report", "ped", "-c", main).code == 0
    pages = {p: p.read_text() for p in (libdir.root / "raff-out").glob("ped*.html")}
    assert sorted(p.name for p in pages) == ["ped.emulator-seed-6.html", "ped.html"]
    assert "emulator/model-5/seed-6" in pages[libdir.root / "raff-out" / "ped.emulator-seed-6.html"]


def test_the_default_board_rebuilt_keeps_the_other_boards_folders(libdir):
    main = libdir.main(libdir.daq(parameters=SCAN % 300, server_override="{NEvents: 100}") + ANALYSIS)
    out = libdir.root / "raff-out" / "ped"
    assert run_raff("build", "ped", "-c", main, "--seed", "6").code == 0
    assert run_raff("build", "ped", "-c", main).code == 0
    main.write_text(main.read_text().replace("NEvents: 100", "NEvents: 110"))
    build = run_raff("build", "ped", "-c", main)  # the default board's outputs are replaced
    assert build.code == 0 and "1 analysis built" in build.out, build.out
    assert (out / "emulator-seed-6" / "summary.csv").is_file()
    assert _provenance(out / "emulator-seed-6")["board"].endswith("seed-6")


# -- item 13: the emulator's start line and --help agree with what it does; the README ----------

@pytest.mark.parametrize("generation,when", [("2021", "configure"), ("menus", "initialize")])
def test_emulator_start_line_says_when_the_data_port_is_bound(generation, when):
    import zmq
    import yaml

    proc = subprocess.Popen([sys.executable, "-m", "raffinerie", "emulator", "--generation", generation,
                             "--server-port", "0", "--target-port", "0", "--client-port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert f"data bound at {when} on the daq config's zmqPushPull_port" in line, line
        server = re.search(r"daq server (tcp://[\d.]+:\d+)", line).group(1)
        port = free_port()
        ctx = zmq.Context.instance()
        req = ctx.socket(zmq.REQ)
        req.setsockopt(zmq.RCVTIMEO, 10000)
        req.setsockopt(zmq.LINGER, 0)
        req.connect(server)
        doc = yaml.safe_dump({"daq": {"zmqPushPull_port": port, "NChips": 3}})
        assert not listening(port, 1)
        if generation == "2021":  # the READY handshake; this server has no initialize
            req.send_string("configure")
            assert "ready" in req.recv_string().lower()
            req.send_string(doc)
        else:
            req.send_multipart([b"initialize", doc.encode()])
        assert req.recv_string().strip().lower() in ("configured", "initialized")
        assert listening(port, 1), f"the data port is not bound after {when}"
        req.close()
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    help_text = run_raff("emulator", "--help").out
    assert f"{generation}: at {when}" in " ".join(help_text.split())


def test_readme_says_the_tests_take_minutes_and_lists_every_example_procedure():
    readme = (ROOT / "README.md").read_text()
    before = readme[:readme.index("```sh\npython3 -m venv .venv && .venv/bin/pip install -q -e '.[test]'")]
    last = before.rstrip()[before.rstrip().rindex("\n\n"):]  # the paragraph that introduces the test command
    # The README's figure is a measured one; CI must stay well under its 30-minute budget.
    said = re.search(r"about (\d+) minutes on a 2-core machine", " ".join(last.split()))
    assert said and 1 <= int(said.group(1)) <= 20, last
    section = readme[readme.index("## The example library"):]
    section = section[:section.index("\n## ", 3)]
    import yaml

    names = [entry["name"] for f in sorted((ROOT / "examples").glob("*.yaml"))
             if isinstance(doc := yaml.safe_load(f.read_text()), list) for entry in doc]
    assert len(names) >= 13
    missing = [n for n in names if f"`{n}`" not in section]
    assert not missing, f"the README's example library does not name {missing}"
    emulator_row = next(l for l in readme.splitlines() if l.startswith("| `raff emulator"))
    assert "at `configure` by the 2021 one" in emulator_row and "at `initialize` by the menu" in emulator_row


def test_a_network_board_alone_writes_its_own_folder(libdir, tmp_path):
    import yaml

    from raffinerie.config.daqconfig import Generation
    from raffinerie.emulator.process import EmulatorProcess

    main = libdir.main(libdir.daq(parameters=SCAN % 200) + ANALYSIS)
    out = libdir.root / "raff-out" / "ped"
    with EmulatorProcess(seed=3, generation=Generation.Y2021) as emu:
        p = emu.ports
        net = tmp_path / "stand.yaml"
        net.write_text(yaml.safe_dump({
            "server": {"hostname": "127.0.0.1", "port": p["server"]},
            "target": {"hostname": "127.0.0.1", "port": p["target"]},
            "data": {"hostname": "127.0.0.1", "port": p["data"]}, "board": "LD-7", "timeout": 2}))
        build = run_raff("build", "ped", "-c", main, "--network", net)
        assert build.code == 0, build.err
    assert not (out / "summary.csv").exists()
    assert (out / "LD-7" / "summary.csv").is_file()
    assert _provenance(out / "LD-7")["board"] == json.loads(
        run_raff("plan", "ped", "-c", main, "--network", net, "--json").out)["identity"]
