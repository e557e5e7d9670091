"""The one-page summary of a tuned board (plot `tuning_summary` of builtin.tuned_config).

What a test stand looks at before it signs a board off: per half, the pedestal spread and
median before the chain (a pedestal run of the untuned board: the analysis the parameter
`before` names, among those tuned_config `uses`) and after it (the tuned board's own data);
the reference values the chain chose (Inv_vref, Noinv_vref, Toa_vref, Tot_vref per half,
phase_strobe per chip) and, with `gain`, the median gain of each half from an injection
scan of the tuned board; and the channels a link of the chain left untuned, by name.

Not a distillery: tuned_config draws it. Its tables (`halves`) are also what the notes say.
"""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd

from raffinerie.config.tree import get_path
from raffinerie.hgcroc import CHANNELS_PER_HALF, CHANNELTYPE_CHANNEL, chip_name

from . import sampling_phase, thresholds, trims, vref

REFERENCES = ("Inv_vref", "Noinv_vref", "Toa_vref", "Tot_vref")
BEFORE_COLUMNS = {"chip", "channeltype", "half", "pedestal", "noise"}
GAIN_COLUMNS = {"chip", "channeltype", "channel", "gain_adc_per_fc"}


def before_spread(table: pd.DataFrame, name: str) -> pd.DataFrame:
    """Per (chip, half) of a builtin.pedestal summary: the median pedestal and the spread
    (std across its live normal channels), as `half_spread` gives them for the tuned data."""
    lacking = BEFORE_COLUMNS - set(table.columns)
    if lacking:
        raise ValueError(f"parameter before: the summary of '{name}' has no column "
                         f"{', '.join(sorted(lacking))}; it must be a builtin.pedestal analysis")
    live = table[(table.channeltype == CHANNELTYPE_CHANNEL) & (table.noise > 0)]
    stats = per_half(live, "pedestal", "noise")[["chip", "half", "pedestal_median", "pedestal_spread"]]
    return stats.rename(columns={"pedestal_median": "pedestal_median_before",
                                 "pedestal_spread": "pedestal_spread_before"})


def per_half(channels: pd.DataFrame, pedestal: str, noise: str) -> pd.DataFrame:
    """Per (chip, half) of a table of one row per channel: how many, the median pedestal, the
    spread (standard deviation across the channels) and the median noise."""
    g = channels.groupby(["chip", "half"])
    return pd.DataFrame({"channels": g.size(), "pedestal_median": g[pedestal].median(),
                         "pedestal_spread": g[pedestal].std(), "noise_median": g[noise].median()}).reset_index()


def half_gain(table: pd.DataFrame, name: str) -> pd.DataFrame:
    """Per (chip, half) of a builtin.injection summary: the median gain (ADC per fC) over the
    channels with one, and how many have one."""
    lacking = GAIN_COLUMNS - set(table.columns)
    if lacking:
        raise ValueError(f"parameter gain: the summary of '{name}' has no column "
                         f"{', '.join(sorted(lacking))}; it must be a builtin.injection analysis")
    rows = table[(table.channeltype == CHANNELTYPE_CHANNEL) & np.isfinite(table.gain_adc_per_fc)]
    rows = rows.assign(half=rows.channel // CHANNELS_PER_HALF)
    g = rows.groupby(["chip", "half"])
    return pd.DataFrame({"gain_median": g.gain_adc_per_fc.median(), "gain_channels": g.size()}).reset_index()


def halves(after: pd.DataFrame, tuned: dict, before: pd.DataFrame | None,
           gain: pd.DataFrame | None) -> pd.DataFrame:
    """One row per (chip, half): after (and before) pedestals, the references chosen, the gain."""
    out = after.copy()
    for ref in REFERENCES:
        out[ref] = [get_path(tuned, (chip_name(chip), "ReferenceVoltage", half, ref))
                    for chip, half in zip(out.chip, out.half)]
    out["phase_strobe"] = [get_path(tuned, (chip_name(c), "Top", 0, "phase_strobe")) for c in out.chip]
    for extra in (before, gain):
        if extra is not None:
            out = out.merge(extra, on=["chip", "half"], how="left")
    return out


# what the chain's analyses write for a channel (half, chip) they tuned: anything else is a flag
# (pedestal_trim writes "ok" and "not scanned" as literals)
FINE = {vref.OK, thresholds.OK, trims.TRIMMED, sampling_phase.CHOSEN, "ok", "not scanned"}


def flagged(upstream: dict, names) -> list[str]:
    """One line per (analysis, flag) of the links `names` among the used analyses: the places
    they flagged (status or flag column not fine), by name, as their own notes give them."""
    lines = []
    for name in names:
        table = upstream.get(name)
        column = next((c for c in ("status", "flag") if table is not None and c in table), None)
        if column is None:
            continue
        bad = table[~table[column].isin(FINE)]
        for flag, rows in bad.groupby(column, sort=False):
            places = [_place(r) for r in rows.itertuples()]
            lines.append(f"{name}: {flag}: " + ", ".join(places[:12]) + (f" +{len(places) - 12} more"
                                                                        if len(places) > 12 else ""))
    return lines


def _place(r) -> str:
    chip = chip_name(int(r.chip))
    if getattr(r, "level", "channel") != "half" and _set(getattr(r, "channel", None)):
        return f"{chip} ch {int(r.channel)}"
    if _set(getattr(r, "half", None)):
        return f"{chip} half {int(r.half)}"
    return chip


def note_lines(table: pd.DataFrame) -> list[str]:
    """The page in words: one line per half."""
    lines = []
    for r in table.itertuples():
        before = (f"{r.pedestal_spread_before:.1f} → " if hasattr(r, "pedestal_spread_before")
                  and np.isfinite(r.pedestal_spread_before) else "")
        refs = ", ".join(f"{ref} {getattr(r, ref):.0f}" for ref in REFERENCES if _set(getattr(r, ref)))
        gain = (f", gain {r.gain_median:.2f} ADC/fC" if hasattr(r, "gain_median")
                and np.isfinite(r.gain_median) else "")
        lines.append(f"{chip_name(r.chip)} half {r.half}: pedestal spread {before}{r.pedestal_spread:.2f} ADC"
                     f"{gain}; {refs or 'no reference set'}")
    return lines


def _set(value) -> bool:
    return value is not None and not (isinstance(value, float) and np.isnan(value))


def draw(table: pd.DataFrame, untuned: list[str], chain: str):
    """The page: spreads and medians before/after (top), the chosen values (bottom left),
    the channels left untuned (bottom right)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11.7, 8.3), layout="constrained")   # A4 landscape: one page
    FigureCanvasAgg(fig)
    fig.suptitle(f"Tuned hexaboard: {table.chip.nunique()} chips, chain {chain}", fontsize=11)
    grid = fig.add_gridspec(2, 2, height_ratios=[1.4, 1])
    labels = [f"{chip_name(c)}\nhalf {h}" for c, h in zip(table.chip, table.half)]
    x = np.arange(len(table))
    _bars(fig.add_subplot(grid[0, 0]), x, labels, table, "pedestal_spread", "pedestal spread (ADC, std "
          "across a half's channels)")
    _bars(fig.add_subplot(grid[0, 1]), x, labels, table, "pedestal_median", "median pedestal (ADC)")
    _table(fig.add_subplot(grid[1, 0]), table, labels)
    text = fig.add_subplot(grid[1, 1])
    text.axis("off")
    text.set_title("flagged by the chain's links (their notes say more)", fontsize=9, loc="left")
    shown = untuned[:16] + ([f"... and {len(untuned) - 16} more (notes.txt)"] if len(untuned) > 16 else [])
    text.text(0, 1, "\n".join(textwrap.fill(line, 95, subsequent_indent="    ") for line in shown)
              or "none: every channel and half was tuned", va="top", fontsize=7, family="monospace",
              transform=text.transAxes)
    return fig


def _bars(ax, x, labels, table: pd.DataFrame, column: str, title: str) -> None:
    before = table.get(column + "_before")
    width = 0.38
    if before is not None:
        ax.bar(x - width / 2, before, width, color="tab:grey", label="before (untuned)")
    ax.bar(x + (width / 2 if before is not None else 0), table[column], width, color="tab:blue",
           label="after (tuned)")
    for xi, value in zip(x, table[column]):
        ax.annotate(f"{value:.1f}", (xi + (width / 2 if before is not None else 0), value), ha="center",
                    textcoords="offset points", xytext=(0, 2), fontsize=7)
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_title(title, fontsize=9)
    top = np.nanmax([np.nanmax(table[column]), np.nanmax(before) if before is not None else 0, 1])
    ax.set_ylim(0, 1.3 * top)   # room for the legend above the bars
    ax.legend(fontsize=7, loc="upper right", ncols=2)


def _table(ax, table: pd.DataFrame, labels: list[str]) -> None:
    ax.axis("off")
    columns = [c for c in (*REFERENCES, "phase_strobe", "gain_median") if c in table and table[c].map(_set).any()]
    cells = [[_cell(v) for v in table[c]] for c in columns]
    heads = [c.replace("_median", " (ADC/fC)") for c in columns]
    shown = ax.table(cellText=[list(r) for r in zip(*cells)] if cells else [[""] * len(labels)],
                     rowLabels=[label.replace("\n", " ") for label in labels], colLabels=heads or ["-"],
                     loc="upper right", cellLoc="center")
    shown.auto_set_font_size(False)
    shown.set_fontsize(7.5)
    ax.set_title("chosen per half", fontsize=9, loc="left")


def _cell(value) -> str:
    if not _set(value):
        return "-"
    return f"{value:.2f}" if isinstance(value, float) and not float(value).is_integer() else f"{value:.0f}"
