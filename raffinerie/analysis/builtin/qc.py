"""QC verdict of a board from its pedestal run: dead and noisy cells, the readout grade, pass or fail.

The rules and limits are those of `raffinerie.qc` (the public module-testing
conventions, README "QC verdicts"), applied to each channel's pedestal and
noise averaged over the points without injection (as the `pedestal`
analysis chooses them). Parameters: `kind` (module or hexaboard),
`geometry` (LD-full, HD-full; default from the number of chips), and each
limit of `raffinerie.qc.QcLimits`.

Outputs: `summary.csv` (per channel: pad, role, pedestal, noise, and qc_flags:
`ok` or the flags as `dead|noisy`),
`verdict.json` (what `raff qc --json` prints), and the pedestal and noise
hexmaps with the flagged cells outlined.
"""

from __future__ import annotations

import json
import os
from dataclasses import fields

import pandas as pd

from raffinerie import geometry as geometries
from raffinerie import qc
from raffinerie.analysis.hexmap import hexmap

from .common import CHANNEL, Distillery, mislabelled_points
from .pedestal import quiet_rows

VERDICT = "verdict.json"
LIMITS = {f.name: f.default for f in fields(qc.QcLimits) if f.name != "kind"}


class Qc(Distillery):
    defaults = {"kind": "module", "geometry": None, **LIMITS}
    plots = ("pedestal_hexmap", "noise_hexmap")

    def analyse(self, data):
        p = self.parameters
        geometry = self._geometry(data)
        clean = mislabelled_points(data, self.notes).drop(data)
        quiet = clean[quiet_rows(clean)]
        table = quiet.groupby(CHANNEL, as_index=False).agg(adc_mean=("adc_mean", "mean"),
                                                           adc_stdd=("adc_stdd", "mean"))
        limits = qc.QcLimits(kind=qc.BoardKind(p["kind"]), **{k: float(p[k]) for k in LIMITS})
        pulsed = self._pulsed(geometry, clean, quiet)
        self.verdict = qc.judge(_columns(table), geometry, limits, injected=pulsed)
        summary = self._summary(geometry, table)
        title = f"{{}} ({geometry.name}, {limits.kind.value}): verdict {self.verdict.document()['verdict']}"
        flags = self.verdict.flags
        return summary, {
            "pedestal_hexmap": lambda: hexmap(table, geometry, quantity="pedestal", column="adc_mean",
                                              unit="ADC", title=title.format("pedestal"), flags=flags),
            "noise_hexmap": lambda: hexmap(table, geometry, quantity="noise", column="adc_stdd", unit="ADC",
                                           title=title.format("noise"), flags=flags)}, None

    def _pulsed(self, geometry, clean, quiet):
        """Channels measured only in points whose half injects charge: undecided, as `raff qc`
        leaves injected channels, never "no data" (which would fail the board)."""
        mask = geometry.rows(clean.chip, clean.channeltype, clean.channel) \
            & ~geometry.rows(quiet.chip, quiet.channeltype, quiet.channel)
        if mask.any():
            self.notes.append(f"{int(mask.sum())} channels have no point without injection in their half: "
                              "undecided, not judged")
        return mask

    def _geometry(self, data) -> geometries.Geometry:
        name = self.parameters["geometry"]
        if name:
            return geometries.load(name)
        chips = self.chips if self.chips is not None else data.chip.unique()
        return geometries.for_chips(int(max(chips)) + 1)

    def _summary(self, geometry, table) -> pd.DataFrame:
        columns = _columns(table)
        off_board = int((geometry.index_of(table.chip, table.channeltype, table.channel) < 0).sum())
        if off_board:
            self.notes.append(f"{off_board} channels are not on the {geometry.name} board: not judged")
        return pd.DataFrame({"chip": geometry.chip, "channeltype": geometry.channeltype,
                            "channel": geometry.channel, "pad": geometry.pad,
                            "role": [geometries.ROLES[r].value for r in geometry.role],
                            "pedestal": qc.on_geometry(columns, geometry, "adc_mean"),
                            "noise": qc.on_geometry(columns, geometry, "adc_stdd"),
                            "qc_flags": [flag_names(int(f)) for f in self.verdict.flags]})

    def run(self, data, output_dir) -> None:
        super().run(data, output_dir)
        with open(os.path.join(output_dir, VERDICT), "w") as f:
            json.dump(self.verdict.document(), f, indent=2)
            f.write("\n")


def _columns(table: pd.DataFrame) -> dict:
    return {c: table[c].to_numpy() for c in table}


def flag_names(bits: int) -> str:
    """`dead|noisy`, or `ok`: the per-channel flags as words."""
    names = [f.name.lower().replace("_", " ") for f in qc.CellFlag if bits & f]
    return "|".join(names) or "ok"


DISTILLERY = Qc
