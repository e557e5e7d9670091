"""Write raffinerie's board geometries (raffinerie/geometry/*.csv) from the public hexmap files.

    python tools/geometry_from_public_maps.py ../shared/data/reference/hexaboard-maps

The inputs are the channel maps and cell positions collected in the public
repository mkilpatr/EstToolsSUSY (folder hexmap/, commit 1b75f34), also used
by cmu-hgc-mac/hgcal-module-testing-gui: `{ld,hd}_pad_to_channel_mapping.csv`
(PAD, ASIC, Channel, Channeltype) and `hex_positions_HPK_{198,432}ch_8inch_
edge_ring_testcap.txt` (pad, x, y in cm, cell type code, drawing hints).
tests/test_geometry.py checks that the shipped files are what this writes.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

SOURCES = {
    "LD-full": ("ld_pad_to_channel_mapping.csv", "hex_positions_HPK_198ch_8inch_edge_ring_testcap.txt"),
    "HD-full": ("hd_pad_to_channel_mapping.csv", "hex_positions_HPK_432ch_8inch_edge_ring_testcap.txt"),
}
ORIGIN = "mkilpatr/EstToolsSUSY hexmap/ at 1b75f34 (also in cmu-hgc-mac/hgcal-module-testing-gui hexmap/)"
COLUMNS = ("chip", "channeltype", "channel", "pad", "role", "x_cm", "y_cm", "cell_type")


def role(channeltype: int, channel: int, pad: int) -> str:
    """What a readout channel reads: a sensor cell, a calibration cell, a common-mode word, nothing."""
    if channeltype == 1:
        return "calib"
    if channeltype == 100:  # even CM words are the first of a half's pair (plot_summary.create_masks)
        return "cm0" if channel % 2 == 0 else "cm1"
    return "cell" if pad > 0 else "nc"


def positions(path: Path) -> dict[int, tuple[str, str, str]]:
    """pad -> (x, y, cell type code) as the file writes them; '#' lines and the header are skipped."""
    out = {}
    for line in path.read_text().splitlines():
        fields = line.split()
        if not fields or line.startswith("#") or not fields[0].lstrip("-").isdigit():
            continue
        out[int(fields[0])] = (fields[1], fields[2], fields[3] if len(fields) > 3 else "")
    return out


def rows(folder: Path, name: str) -> list[tuple]:
    mapping, geo = SOURCES[name]
    where = positions(folder / geo)
    out = []
    with open(folder / mapping, newline="") as f:
        for r in csv.DictReader(f):
            pad, chip, channel, kind = (int(r[k]) for k in ("PAD", "ASIC", "Channel", "Channeltype"))
            x, y, cell_type = where[pad]
            out.append((chip, kind, channel, pad, role(kind, channel, pad),
                        f"{float(x):.2f}", f"{float(y):.2f}", cell_type))
    return sorted(out, key=lambda r: (r[0], r[1], r[2]))


def text(folder: Path, name: str) -> str:
    mapping, geo = SOURCES[name]
    head = [f"# raffinerie board geometry {name}: one row per readout channel.",
            f"# Made by tools/geometry_from_public_maps.py from {mapping} and {geo}",
            f"# of {ORIGIN}.",
            "# role: cell (reads a sensor cell), calib (calibration cell), cm0/cm1 (common-mode words),",
            "# nc (not connected to the sensor). x_cm, y_cm: the cell's centre (cm); for cm and nc the",
            "# place the public hexmaps draw them beside the sensor. cell_type: the geometry file's code."]
    body = [",".join(COLUMNS)] + [",".join(str(v) for v in r) for r in rows(folder, name)]
    return "\n".join(head + body) + "\n"


def main(argv: list[str]) -> int:
    folder = Path(argv[1]) if len(argv) > 1 else Path("../shared/data/reference/hexaboard-maps")
    target = Path(__file__).resolve().parent.parent / "raffinerie" / "geometry"
    for name in SOURCES:
        (target / f"{name}.csv").write_text(text(folder, name))
        print(f"wrote {target / (name + '.csv')}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
