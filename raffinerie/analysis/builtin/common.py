"""What the built-in distilleries share: the interface, filtering, output, plots,
and the checks of the data against its labels.

Every built-in reads the dataset through `prepare`:

- scan values a run's yaml did not carry (`raff import` marks them with a
  column `<axis>_unknown` = 1) become NaN in their column, so no analysis
  takes them for the power-on default;
- points whose data contradict their label (`mislabelled_points`: a point
  labelled "no injection" whose injected channels fire TOA or TOT, or sit at
  ADC saturation) are left out, and each is named in `notes`.

`notes` are lines for people: `run` writes them to notes.txt, and the
analysis runner prints them in the build output.
"""

from __future__ import annotations

import enum
import math
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from raffinerie.graph.search import STEP_AXIS

HIGH_RANGE_FC = 1.953   # injected charge per Calib step through the 8 pF capacitor
LOW_RANGE_FC = 0.122    # through the 0.5 pF capacitor
CHANNEL_TYPES = {0: "channels", 1: "calibration channels", 100: "common mode"}
NOTES = "notes.txt"
UNKNOWN_SUFFIX = "_unknown"   # `raff import`: 1 where the run's yaml lacked this scan key
CHANNEL = ["chip", "channeltype", "channel"]
# Columns of a measurement (and of the dataset's bookkeeping): never scan axes.
MEASURED = {"chip", "half", "channel", "channeltype", "n_events", "point", "repeat",
            "adc_median", "adc_iqr", "tot_median", "tot_iqr", "toa_median", "toa_iqr",
            "adc_mean", "adc_stdd", "tot_mean", "tot_stdd", "toa_mean", "toa_stdd",
            "tot_efficiency", "tot_efficiency_error", "toa_efficiency", "toa_efficiency_error",
            "tot_overflow", "charge"}
# Registers the built-ins model by name, constant over a scan or not.
MODELLED_REGISTERS = ("Calib", "phase_strobe", "trim_inv", "LowRange", "HighRange", "IntCtest",
                      "Tot_vref", "Toa_vref")


class Status(str, enum.Enum):
    """Per-channel outcome of a fit (the `status` column)."""

    FIT = "fit"                          # resolved and fitted
    UNRESOLVED = "unresolved"            # the transition lies between two scan points
    BELOW_SCAN = "fires below the scan"  # already efficient at the first point
    FAILED = "fit failed"                # enough points, but the fit did not converge
    NO_DATA = "no data"                  # nothing left to analyse (e.g. all points flagged)

    def __str__(self) -> str:
        return self.value


class Distillery:
    """Datenraffinerie interface: __init__(parameters), output(), run(data, output_dir).

    Subclasses set `defaults`, `plots` and `calibrates`, and implement
    `analyse(data) -> (summary, {plot name: draw function}, calibration)`.
    Every built-in accepts `where: {column: value or [values]}` to select rows.
    """

    defaults: dict = {}
    plots: tuple[str, ...] = ()
    calibrates = False
    calibration_file = "calibration.yaml"
    dataset_form = "dataset"   # the built-ins read the Dataset themselves: see `load`
    injected_only = False      # analyses of injected channels read only their slots
    chips = None               # every chip of the dataset (panels), read before any row
    upstream: dict = {}        # name -> summary DataFrame of each analysis it `uses` (the runner sets it)

    def __init__(self, parameters: dict | None = None):
        unknown = set(parameters or {}) - set(self.defaults) - {"where"}
        if unknown:
            raise ValueError(f"unknown parameters {sorted(unknown)}; this analysis takes "
                             f"{sorted(self.defaults) + ['where']}")
        self.parameters = {**self.defaults, **(parameters or {})}
        self.notes: list[str] = []

    def dataset_columns(self, dataset) -> list[str]:
        """What the built-ins read, so that 200-odd constant registers stay on disk: the
        measured columns, the configuration that varies from point to point (the scan
        axes and what moves with them, which `scan_axes` finds), the registers they model,
        and what `where` names. Columns that vary only by channel never vary within a
        channel, so they are never scan axes."""
        where = set(self.parameters.get("where") or {})
        return [c for c in dataset.columns
                if c in MEASURED or c in MODELLED_REGISTERS or c in where or c.endswith(UNKNOWN_SUFFIX)
                or dataset.dims[c] not in ([], ["slot"])]

    def output(self) -> dict:
        return {"summary": "summary.csv", "plots": [f"{p}.png" for p in self.plots],
                "calibration": self.calibration_file if self.calibrates else None}

    def load(self, dataset) -> pd.DataFrame:
        """The rows this analysis reads: its columns, and with `injected_only`, the slots of
        the injected channels only (12 of 234 on a usual injection scan), so a scan of
        131,072 points is a few million rows, not 30 million."""
        chip = dataset.slot_values("chip")
        self.chips = None if chip is None else pd.unique(chip)
        slots = injected_slots(dataset, self.parameters.get("injected_channels")) if self.injected_only else None
        if slots is not None and not len(slots):
            slots = None  # no injected channel at all: the analysis says so itself
        return dataset.to_pandas(self.dataset_columns(dataset), slots=slots)

    def run(self, data, output_dir) -> None:
        self.notes = []
        if not isinstance(data, pd.DataFrame):
            data = self.load(data)
        data = select(unknown_to_nan(data, self.notes), self.parameters.get("where"))
        if data.empty:
            raise ValueError("no rows to analyse (check `where`)")
        summary, figures, calibration = self.analyse(data)
        summary.to_csv(os.path.join(output_dir, "summary.csv"), index=False, float_format="%.6g")
        if self.notes:
            with open(os.path.join(output_dir, NOTES), "w") as f:
                f.write("".join(line + "\n" for line in self.notes))
        for name, draw in figures.items():
            save(draw, os.path.join(output_dir, f"{name}.png"))
        if self.calibrates:
            import yaml

            with open(os.path.join(output_dir, self.calibration_file), "w") as f:
                f.write("# calibration written by raffinerie's " + type(self).__name__ + " analysis\n")
                yaml.safe_dump(calibration or {}, f, sort_keys=True)

    def analyse(self, data: pd.DataFrame):
        raise NotImplementedError


def select(data: pd.DataFrame, where: dict | None) -> pd.DataFrame:
    for column, wanted in (where or {}).items():
        if column not in data.columns:
            raise ValueError(f"`where` names column '{column}', which the dataset does not have")
        values = wanted if isinstance(wanted, list) else [wanted]
        data = data[data[column].isin(values)]
    return data


def unknown_to_nan(data: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    """Scan values marked unknown (`<axis>_unknown` = 1) become NaN in their column."""
    markers = [c for c in data.columns if c.endswith(UNKNOWN_SUFFIX)
               and c[:-len(UNKNOWN_SUFFIX)] in data.columns]
    if not markers:
        return data
    data = data.copy()
    for marker in markers:
        axis, unknown = marker[:-len(UNKNOWN_SUFFIX)], data[marker].to_numpy() > 0
        if unknown.any():
            data[axis] = data[axis].astype(float).where(~unknown)
            points = data.loc[unknown, "point"].nunique() if "point" in data else int(unknown.sum())
            notes.append(f"{points} points have no {axis} (their run yaml lacks it): "
                         f"{axis} is NaN for them")
    return data.drop(columns=markers)


def scan_axes(data: pd.DataFrame, modelled=()) -> list[str]:
    """Configuration columns that vary between the points of a channel, except `modelled`.

    These are the scan's axes (and whatever moves with them); an analysis
    that does not model one analyses each of its values separately.
    """
    # a search's round only numbers its probes: the register it moved is the axis
    candidates = [c for c in data.columns if c not in MEASURED and c not in modelled and c != STEP_AXIS
                  and not c.endswith(UNKNOWN_SUFFIX) and data[c].dtype.kind in "biuf"]
    if not candidates or data.empty:
        return []
    spread = data.groupby(CHANNEL)[candidates].nunique(dropna=False).max()
    varying = [c for c in candidates if spread[c] > 1]
    # columns that only restate another (e.g. Top.0 values) add no slices
    out, seen = [], []
    for c in varying:
        if not any(data.groupby(c, dropna=False)[o].nunique(dropna=False).max() <= 1
                   and data.groupby(o, dropna=False)[c].nunique(dropna=False).max() <= 1 for o in seen):
            out.append(c)
            seen.append(c)
    return out


def slices(data: pd.DataFrame, axes: list[str]):
    """(values of `axes`, rows) for every slice of the data; NaN (unknown) is a slice too."""
    if not axes:
        yield (), data
        return
    for values, rows in data.groupby(axes, dropna=False, sort=True):
        yield (values if isinstance(values, tuple) else (values,)), rows


def describe(axes: list[str], values: tuple) -> str:
    return ", ".join(f"{a} {'unknown' if _isnan(v) else _num(v)}" for a, v in zip(axes, values))


def _isnan(v) -> bool:
    return isinstance(v, float) and math.isnan(v)


def _num(v):
    return int(v) if isinstance(v, (float, np.floating)) and float(v).is_integer() else v


FLAG_COLUMNS = ["point", *CHANNEL, "reason"]


@dataclass
class LabelCheck:
    """The points whose data contradict their label, with the evidence per channel."""

    flagged: pd.DataFrame     # FLAG_COLUMNS: one row per channel that contradicts its label

    @property
    def points(self) -> list:
        return sorted(self.flagged.point.unique()) if len(self.flagged) else []

    def drop(self, data: pd.DataFrame) -> pd.DataFrame:
        return data[~data.point.isin(self.points)] if self.points else data


def mislabelled_points(data: pd.DataFrame, notes: list[str], saturation_adc: float = 1000,
                       injected: pd.Series | None = None) -> LabelCheck:
    """Points labelled "no injection" whose injected channels respond as if injected.

    Physics: with no injected charge, a channel fires neither TOA nor TOT and
    its ADC sits at its pedestal, far from saturation. A connected channel may
    read tens of ADC above its pedestal at Calib 0 (a residual injection on
    real boards), so only TOA, TOT or saturation count as contradictions. A
    point is flagged when most of its connected channels contradict the label
    (a chip without TDC output can still saturate).
    """
    if "point" not in data or data.empty:
        return LabelCheck(pd.DataFrame(columns=FLAG_COLUMNS))
    injected = injected_rows(data) if injected is None else injected
    rows = data[injected & (injected_charge(data) == 0)]
    if rows.empty:
        return LabelCheck(pd.DataFrame(columns=FLAG_COLUMNS))
    evidence = pd.DataFrame({"TOA fires": rows.toa_efficiency.to_numpy() > 0.5,
                             "TOT fires": rows.tot_efficiency.to_numpy() > 0.5,
                             "ADC saturated": rows.adc_median.to_numpy() >= saturation_adc},
                            index=rows.index)
    contradicts = evidence.any(axis=1)
    share = contradicts.groupby(rows.point).mean()
    bad = contradicts & rows.point.isin(share.index[share > 0.5])
    reasons = evidence[bad].apply(lambda r: ", ".join(r.index[r.to_numpy()]), axis=1) if bad.any() else []
    flagged = rows.loc[bad, ["point", *CHANNEL]].assign(reason=reasons)
    labels = [c for c in ("Calib", "phase_strobe", "IntCtest") if c in data]
    for point, g in flagged.groupby("point"):
        mine = rows[rows.point == point]
        label = data.loc[data.point == point, labels].iloc[0]
        notes.append(f"point {int(point)} ({describe(labels, tuple(label))}) contradicts its label: no "
                     f"injection, but {len(g)} of its {len(mine)} injected channels respond "
                     f"({g.reason.iloc[0]}; median TOA efficiency {mine.toa_efficiency.median():.2f}, "
                     f"ADC {mine.adc_median.median():.0f}); left out")
    return LabelCheck(flagged)


def injected_charge(data: pd.DataFrame) -> pd.Series:
    """Injected charge (fC) of each row: Calib through the capacitors its channel connects."""
    calib = data["Calib"] if "Calib" in data else pd.Series(0, index=data.index)
    high = data["HighRange"] if "HighRange" in data else 0
    low = data["LowRange"] if "LowRange" in data else 0
    intctest = data["IntCtest"] if "IntCtest" in data else 1
    return calib * (HIGH_RANGE_FC * high + LOW_RANGE_FC * low) * (intctest > 0)


def injected_slots(dataset, channels=None):
    """Readout slots that `injected_rows` can select in some point (None: every slot)."""
    kind, channel = dataset.slot_values("channeltype"), dataset.slot_values("channel")
    if kind is None or channel is None:
        return None
    if channels:
        return np.flatnonzero((kind == 0) & np.isin(channel, channels))
    connected = np.zeros(len(kind), dtype=bool)
    for column in ("HighRange", "LowRange"):
        if column in dataset.dims:
            values = dataset.slot_values(column, reduce=np.max)
            if values is None:
                return None
            connected |= values > 0
    return np.flatnonzero(connected & (kind != 100))


def injected_rows(data: pd.DataFrame, channels=None) -> pd.Series:
    if channels:
        return (data["channeltype"] == 0) & data["channel"].isin(channels)
    connected = pd.Series(False, index=data.index)
    for column in ("HighRange", "LowRange"):
        if column in data:
            connected |= data[column] > 0
    return connected & (data["channeltype"] != 100)


# --- plots -----------------------------------------------------------------------

def save(draw, path: str) -> None:
    import sys

    import matplotlib

    matplotlib.use("Agg")  # for a distillery's own pyplot figures; `chip_panels` needs no backend
    fig = draw()
    # Constrained layout (`chip_panels`) already keeps every label and outside legend
    # inside the figure; bbox_inches="tight" on top would lay it out and draw it once more.
    # A figure of another distillery without a layout engine still gets it.
    fig.savefig(path, dpi=110, bbox_inches=None if fig.get_layout_engine() is not None else "tight")
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close(fig)  # a figure pyplot made keeps its memory until closed; others: nothing


PANELS_PER_ROW = 3  # an LD board's chips side by side; an HD board's 6 in two rows, not one strip


def chip_panels(chips, title: str, sharey: bool = True):
    """One panel per chip, up to three side by side: (figure, {chip: axes}).

    A bare `Figure`, as matplotlib advises for files written without a GUI:
    no pyplot (its import and figure manager), nothing to close, and no
    backend chosen for the user's own code in the same process."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    chips = sorted(int(c) for c in chips) or [0]
    columns = min(len(chips), PANELS_PER_ROW)
    rows = -(-len(chips) // columns)
    fig = Figure(figsize=(4.6 * columns, 4.0 * rows), layout="constrained")
    FigureCanvasAgg(fig)  # drawn by Agg, as pyplot's "Agg" backend drew it
    axes = fig.subplots(rows, columns, sharey=sharey, squeeze=False).ravel()
    for ax in axes[len(chips):]:
        ax.set_visible(False)  # a last row with fewer chips
    fig.suptitle(title, fontsize=13)
    panels = {}
    for ax, chip in zip(axes, chips):
        ax.set_title(f"chip {chip} (roc_s{chip})", fontsize=11)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=9)
        panels[chip] = ax
    return fig, panels


def board_hexmap(summary: pd.DataFrame, column: str, quantity: str, unit: str = "", chips=None,
                 bad: dict | None = None, title: str | None = None):
    """A draw function: `column` of the per-channel `summary` on the board's hexmap, the geometry
    following the chip count (3: LD-full, 6: HD-full), cells whose `flag` is a key of `bad`
    outlined with that CellFlag. A board of no known geometry gets a figure that says so (its
    declared plot is still written)."""
    from raffinerie import geometry as geometries
    from raffinerie.analysis.hexmap import hexmap

    def draw():
        n = int(max(summary.chip if chips is None else chips, default=-1)) + 1
        if n not in geometries.CHIPS_GEOMETRY:
            fig, panels = chip_panels(range(n), f"{quantity}: no hexmap")
            for ax in panels.values():
                no_data(ax, f"no board geometry has {n} chips")
            return fig
        g = geometries.for_chips(n)
        flags = None
        if bad and "flag" in summary:
            flags = np.zeros(len(g.pad), dtype=np.int64)
            rows = g.index_of(summary.chip, summary.channeltype, summary.channel)
            for word, flag in bad.items():
                at = rows[(summary.flag == word).to_numpy() & (rows >= 0)]
                flags[at] |= int(flag)
        return hexmap(summary, g, quantity=quantity, unit=unit, column=column, flags=flags,
                      title=title or f"{quantity} ({g.name})")
    return draw


def no_data(ax, text: str = "no data") -> None:
    """Say so in a panel that has nothing to show, instead of leaving it empty."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=12, color="grey")
    # tick labels off, not ticks: the y axis is shared with the other panels
    ax.tick_params(labelbottom=False, labelleft=False)


def channel_colors(n: int):
    import matplotlib

    cmap = matplotlib.colormaps["viridis"]
    return [cmap(i / max(n - 1, 1)) for i in range(n)]


def distinct_colors(n: int):
    """n line colours that can be told apart: tab10 up to 10 lines; beyond that turbo,
    whose hue runs the whole spectrum (12 viridis shades are near-identical teals)."""
    import matplotlib

    if n <= 10:
        return [matplotlib.colormaps["tab10"](i) for i in range(n)]
    cmap = matplotlib.colormaps["turbo"]
    return [cmap(x) for x in np.linspace(0.05, 0.95, n)]  # its ends are near black and dark red


def legend_outside(ax, **kw) -> None:
    """The legend below the panel, where it hides no data."""
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), borderaxespad=0.0, **kw)


def linear_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(slope, intercept) by least squares; NaN with fewer than two distinct x."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    if len(np.unique(x[ok])) < 2:
        return math.nan, math.nan
    slope, intercept = np.polyfit(x[ok], y[ok], 1)
    return float(slope), float(intercept)
