"""Discriminator thresholds just above the noise: the shared code of `toa_threshold` and
`tot_threshold` (issue 21, the tuning chain's threshold links).

Input: a scan of one half-wise reference (`Toa_vref` or `Tot_vref`) WITHOUT injection; the
dataset's register column is each row's half's value, `<tdc>_efficiency` the fraction of
events in which the discriminator fired: on noise alone, since nothing is injected.

Per channel (normal channels only, as hexactrl-script's toa_vref_scan_noinj analysis does):
its *noise edge*, the lowest scanned value from which on (that value and every higher one)
its measured noise rate is below `max_noise_rate`. Per (chip, half): the edge of the half is
the highest edge of its live channels (the MAX over channels, not the mean: one channel
firing on noise floods the readout and the trigger as much as 36 would a little, and a mean
over 36 channels would hide it; hexactrl-script also takes the max), and the chosen value is
edge + `margin` (at most 1023, the 10-bit register's top). A half whose edge is not inside
the scan gets no value.

Statistics: with N events, 0 fired only bounds a rate below about 3/N. The scan is said
to resolve `max_noise_rate` only if that bound (1 - (1 - confidence)^(1/N)) is below it; if not,
a note says so. At the chosen value each channel's rate gets a one-sided Wilson upper limit
at `confidence` (2.7/N at 0 fired for 95 %, near the exact 3/N; closed form, no scipy);
a half whose worst limit is not below `max_noise_rate` keeps its value but is flagged
`too few events`: the data do not show the rate is that low.

Summary: one table with `level` = `half` or `channel`. Columns: level, chip, half,
channeltype, channel (channel rows), noise_edge (the half's or the channel's own), chosen
(the half's value, on its channel rows too), measured_at (the scanned value the rates are
read at: the highest at or below `chosen`, where the rate is at least that at `chosen`),
rate_at_chosen (half: the highest over its live channels), rate_upper_limit,
n_firing_at_edge (live channels that still fired at least once at the half's edge),
n_events, flag. Flags: `ok`; `too few events` (half, value written); `edge above the
scan` (still fires at the highest value), `edge below the scan` (quiet already at the
lowest value), `no live channel` (half), and `dead` (channel: noise exactly 0 at every
point, a stuck output, the rule of raffinerie.qc), each without a value. A channel that is
dead or quiet over the whole scan does not constrain its half.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import pandas as pd

from raffinerie.qc import CellFlag

from .common import (CHANNEL, Distillery, board_hexmap, chip_panels, injected_charge, injected_rows,
                     no_data, scan_axes)

REGISTER_TOP = 1023           # Toa_vref, Tot_vref: 10-bit (hgcroc-physics.md)
HALF = ["chip", "half"]
OK, FEW_EVENTS, ABOVE, BELOW, DEAD, NO_LIVE = ("ok", "too few events", "edge above the scan",
                                               "edge below the scan", "dead", "no live channel")
WITH_VALUE = (OK, FEW_EVENTS)
# the hexmap outlines: a dead cell as QC marks it; one that fires on noise at every value as noisy
HEXMAP_FLAGS = {DEAD: CellFlag.DEAD, ABOVE: CellFlag.NOISY}
HALF_COLOURS = ("tab:blue", "tab:orange")


@dataclass(frozen=True)
class Discriminator:
    """What tells the TOA and TOT links apart: the names."""

    name: str          # "TOA"
    register: str      # its half-wise reference: "Toa_vref"
    efficiency: str    # the dataset's column: "toa_efficiency"


def resolution(n_events, confidence: float):
    """The upper limit on a rate when nothing fired in n_events (exact: 1 - (1 - CL)^(1/N))."""
    return 1.0 - (1.0 - confidence) ** (1.0 / np.asarray(n_events, float))


def wilson_upper(fired, n_events, confidence: float):
    """One-sided Wilson score upper limit on a rate: k of N fired."""
    z = NormalDist().inv_cdf(confidence)
    n = np.asarray(n_events, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.asarray(fired, float) / n
        centre = p + z * z / (2 * n)
        spread = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        return (centre + spread) / (1 + z * z / n)


class NoiseThreshold(Distillery):
    """A half-wise threshold reference set `margin` steps above where noise stops firing."""

    discriminator: Discriminator
    plots = ("noise_edge_hexmap", "noise_rate")   # the map first, as the report shows it
    calibrates = True

    def analyse(self, data):
        d = self.discriminator
        counts = self._counts(data)
        channels = self._channel_edges(counts)
        halves = self._half_edges(channels)
        channels = channels.merge(halves[HALF + ["chosen"]], on=HALF, how="left")
        halves, channels = self._at_chosen(counts, halves, channels)
        self._note(halves, channels, counts)
        summary = pd.concat([halves.assign(level="half"), channels.assign(level="channel")],
                            ignore_index=True)[self._columns()]
        chips = self.chips if self.chips is not None else data.chip.unique()
        figures = {"noise_edge_hexmap": board_hexmap(
                       channels, "noise_edge", f"{d.register} noise edge of each channel", "DAC",
                       chips=chips, bad=HEXMAP_FLAGS),
                   "noise_rate": lambda: self._rate_plot(counts, halves, chips)}
        calibration = {}
        for r in halves[halves.flag.isin(WITH_VALUE)].itertuples():
            calibration.setdefault(f"roc_s{int(r.chip)}", {}).setdefault("ReferenceVoltage", {})[
                int(r.half)] = {d.register: int(r.chosen)}
        return summary, figures, calibration

    @staticmethod
    def _columns():
        return ["level", "chip", "half", "channeltype", "channel", "noise_edge", "chosen", "measured_at",
                "rate_at_chosen", "rate_upper_limit", "n_firing_at_edge", "n_events", "flag"]

    # -- the counts ---------------------------------------------------------------------

    def _counts(self, data: pd.DataFrame) -> pd.DataFrame:
        """Fired and recorded events per normal channel and scanned value (repeats summed)."""
        d = self.discriminator
        if d.register not in data or data[d.register].nunique() < 2:
            raise ValueError(f"the dataset has no {d.register} scan (a {d.register} column with 2 or more "
                             "values)")
        others = scan_axes(data, modelled=(d.register,))
        if others:   # one value per half is written: a second axis would need a choice between its slices
            raise ValueError(f"this analysis reads a scan of {d.register} alone; {', '.join(others)} "
                             "varies too (select one value with `where`)")
        rows = data[data.channeltype == 0]
        injected = (injected_charge(rows) * injected_rows(rows)) > 0
        if injected.any():  # those channels see a pulse, not their noise
            self.notes.append(f"{int(injected.sum())} rows of injected channels (charge > 0) are left out: "
                              "a noise scan must not inject")
            rows = rows[~injected]
        unknown = rows[d.register].isna()
        if unknown.any():
            self.notes.append(f"{int(unknown.sum())} rows have no {d.register} value: left out")
            rows = rows[~unknown]
        if rows.empty:
            raise ValueError("no normal channel without injection to analyse")
        fired = np.rint(rows[d.efficiency].to_numpy(float) * rows.n_events.to_numpy(float))
        counts = rows.assign(fired=fired, value=rows[d.register].astype(int)).groupby(
            CHANNEL + ["half", "value"], as_index=False).agg(
            fired=("fired", "sum"), n_events=("n_events", "sum"), noise=("adc_stdd", "max"))
        counts["rate"] = counts.fired / counts.n_events
        counts["passes"] = counts.rate < self.parameters["max_noise_rate"]
        return counts

    # -- per channel, per half ----------------------------------------------------------

    def _channel_edges(self, counts: pd.DataFrame) -> pd.DataFrame:
        """Each channel's noise edge: the lowest value from which on every value passes."""
        down = counts.sort_values(CHANNEL + ["value"], ascending=[True] * 3 + [False])
        # passing from the scan's top down to here: a running "all" per channel
        from_top = down.groupby(CHANNEL, sort=False).passes.cummin().astype(bool)
        ch = down.groupby(CHANNEL, as_index=False).agg(half=("half", "first"), lowest=("value", "min"),
                                                       highest=("value", "max"), noise=("noise", "max"))
        edges = down[from_top].groupby(CHANNEL, as_index=False).value.min()
        edges = edges.rename(columns={"value": "noise_edge"})
        ch = ch.merge(edges, on=CHANNEL, how="left")
        ch["flag"] = np.select([ch.noise <= 0, ch.noise_edge.isna(), ch.noise_edge <= ch.lowest],
                               [DEAD, ABOVE, BELOW], OK)
        ch.loc[ch.flag != OK, "noise_edge"] = np.nan
        return ch.drop(columns=["lowest", "highest", "noise"])

    def _half_edges(self, ch: pd.DataFrame) -> pd.DataFrame:
        """The half's edge: the highest edge of its live channels; flagged if any has none in the scan."""
        live = ch[ch.flag != DEAD]
        halves = ch.groupby(HALF, as_index=False).size()[HALF]
        stats = live.assign(above=live.flag == ABOVE, has=live.flag == OK).groupby(HALF, as_index=False).agg(
            noise_edge=("noise_edge", "max"), n_above=("above", "sum"), n_edges=("has", "sum"),
            n_live=("flag", "size"))
        h = halves.merge(stats, on=HALF, how="left").fillna({"n_live": 0, "n_above": 0, "n_edges": 0})
        h["flag"] = np.select([h.n_live == 0, h.n_above > 0, h.n_edges == 0], [NO_LIVE, ABOVE, BELOW], OK)
        h.loc[h.flag != OK, "noise_edge"] = np.nan
        h["chosen"] = np.minimum(h.noise_edge + self.parameters["margin"], REGISTER_TOP)
        return h.drop(columns=["n_above", "n_edges"])

    def _at_chosen(self, counts, halves, ch):
        """Rates at the chosen value (read at the highest scanned value at or below it), the upper
        limits, and how many live channels still fire at the half's edge."""
        p = self.parameters
        c = counts.merge(halves[HALF + ["noise_edge", "chosen"]], on=HALF)
        c = c.merge(ch[CHANNEL + ["flag"]], on=CHANNEL)
        c = c[c.flag != DEAD]
        below = c[c.value <= c.chosen]
        read = below.groupby(HALF).value.max().rename("measured_at")
        at = below.merge(read, left_on=HALF, right_index=True)
        at = at[at.value == at.measured_at].copy()
        at["rate_upper_limit"] = wilson_upper(at.fired, at.n_events, p["confidence"])
        cols = CHANNEL + ["measured_at", "rate", "rate_upper_limit", "n_events"]
        ch = ch.merge(at[cols].rename(columns={"rate": "rate_at_chosen"}), on=CHANNEL, how="left")
        worst = at.groupby(HALF, as_index=False).agg(measured_at=("measured_at", "first"),
                                                     rate_at_chosen=("rate", "max"),
                                                     rate_upper_limit=("rate_upper_limit", "max"),
                                                     n_events=("n_events", "min"))
        edge = c[(c.value == c.noise_edge) & (c.fired > 0)].groupby(HALF).size().rename("n_firing_at_edge")
        halves = halves.merge(worst, on=HALF, how="left")
        halves = halves.merge(edge, left_on=HALF, right_index=True, how="left")
        halves["n_firing_at_edge"] = halves.n_firing_at_edge.fillna(0).where(halves.flag == OK)
        few = (halves.flag == OK) & ~(halves.rate_upper_limit < p["max_noise_rate"])
        halves.loc[few, "flag"] = FEW_EVENTS
        return halves, ch

    # -- notes, plot ----------------------------------------------------------------------

    def _note(self, halves, ch, counts) -> None:
        d, p = self.discriminator, self.parameters
        n = int(counts.n_events.min())
        bound = float(resolution(n, p["confidence"]))
        if bound >= p["max_noise_rate"]:
            self.notes.append(
                f"{n} events per point cannot resolve max_noise_rate {p['max_noise_rate']:g}: with none "
                f"fired the "
                f"rate is only bounded below {bound:.2g} ({p['confidence']:.0%} CL); "
                f"{int(np.ceil(np.log(1 - p['confidence']) / np.log(1 - p['max_noise_rate'])))} events would")
        for flag in (FEW_EVENTS, ABOVE, BELOW, NO_LIVE):
            rows = halves[halves.flag == flag]
            if len(rows):
                names = ", ".join(f"roc_s{int(r.chip)} half {int(r.half)}" for r in rows.itertuples())
                value = "its value is written" if flag == FEW_EVENTS else f"no {d.register} written"
                self.notes.append(f"flag `{flag}`: {names} ({value})")
        bad = ch[ch.flag.isin((DEAD, ABOVE))]
        if len(bad):
            kinds = ", ".join(f"{k} {v}" for k, v in bad.flag.value_counts().items())
            listed = ", ".join(f"roc_s{int(r.chip)} ch {int(r.channel)} ({r.flag})"
                               for r in bad.head(20).itertuples())
            self.notes.append(f"{len(bad)} channels flagged ({kinds}): {listed}")

    def _rate_plot(self, counts, halves, chips):
        from matplotlib.collections import LineCollection
        from matplotlib.lines import Line2D

        d, p = self.discriminator, self.parameters
        fig, panels = chip_panels(chips, f"{d.name} fired on noise (no injection) versus {d.register}: worst "
                                  "channel of each half (thick), every channel (thin)")
        floor = 0.3 / counts.n_events.max()   # 0 fired cannot show on a log axis: drawn at this floor
        for chip, ax in panels.items():
            mine = counts[counts.chip == chip]
            if mine.empty:
                no_data(ax)
                continue
            for half, colour in enumerate(HALF_COLOURS):
                rows = mine[mine.half == half].sort_values("value")
                lines = [np.column_stack([g.value, np.maximum(g.rate, floor)])
                         for _, g in rows.groupby("channel")]
                ax.add_collection(LineCollection(lines, colors=colour, lw=0.5, alpha=0.25))
                worst = rows.groupby("value").rate.max()
                ax.plot(worst.index, np.maximum(worst.to_numpy(), floor), "o-", ms=3, lw=1.6, color=colour)
                h = halves[(halves.chip == chip) & (halves.half == half)]
                if h.empty:
                    continue
                r = h.iloc[0]
                known = np.isfinite(r.noise_edge)
                if known:
                    ax.axvline(r.noise_edge, color=colour, ls="--", lw=1)
                    ax.axvline(r.chosen, color=colour, ls="-", lw=1.5)
                # the values in words: the two halves' lines often fall on the same scan value
                text = f"edge {r.noise_edge:.0f} → {r.chosen:.0f}" if known else "no value"
                # upper right: below the top row of fully efficient points, above the quiet floor
                ax.text(0.98, 0.86 - 0.08 * half, f"half {half}: {text} ({r.flag})", color=colour, ha="right",
                        transform=ax.transAxes, fontsize=8, fontweight="bold",
                        bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1})
            ax.axhline(p["max_noise_rate"], color="tab:red", lw=1)
            ax.axhline(float(resolution(mine.n_events.min(), p["confidence"])), color="grey", ls=":", lw=1)
            ax.set_yscale("log")
            ax.set_ylim(floor * 0.7, 1.5)
            ax.set_xlabel(f"{d.register} (DAC)")
        panels[min(panels)].set_ylabel(f"{d.name} efficiency (fraction of events fired)")
        handles = [Line2D([], [], color=c, marker="o", ms=3, label=f"half {h}")
                   for h, c in enumerate(HALF_COLOURS)]
        handles += [Line2D([], [], color="black", ls="--", lw=1, label="noise edge"),
                    Line2D([], [], color="black", lw=1.5, label=f"chosen (edge + {p['margin']})"),
                    Line2D([], [], color="tab:red", lw=1, label=f"max_noise_rate {p['max_noise_rate']:g}"),
                    Line2D([], [], color="grey", ls=":", lw=1, label="bound at 0 fired"),
                    Line2D([], [], ls="none", label=f"0 fired drawn at {floor:.1g}")]
        panels[min(panels)].legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.2),
                                   fontsize=8, ncol=2, borderaxespad=0.0)
        return fig
