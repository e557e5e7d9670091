"""What the built-in distilleries share: the interface, filtering, output, plots."""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd

HIGH_RANGE_FC = 1.953   # injected charge per Calib step through the 8 pF capacitor
LOW_RANGE_FC = 0.122    # through the 0.5 pF capacitor
CHANNEL_TYPES = {0: "channels", 1: "calibration channels", 100: "common mode"}


class Distillery:
    """Datenraffinerie interface: __init__(parameters), output(), run(data, output_dir).

    Subclasses set `defaults`, `plots` and `calibrates`, and implement
    `analyse(data) -> (summary, {plot name: draw function}, calibration)`.
    Every built-in accepts `where: {column: value or [values]}` to select rows.
    """

    defaults: dict = {}
    plots: tuple[str, ...] = ()
    calibrates = False

    def __init__(self, parameters: dict | None = None):
        unknown = set(parameters or {}) - set(self.defaults) - {"where"}
        if unknown:
            raise ValueError(f"unknown parameters {sorted(unknown)}; this analysis takes "
                             f"{sorted(self.defaults) + ['where']}")
        self.parameters = {**self.defaults, **(parameters or {})}

    def output(self) -> dict:
        return {"summary": "summary.csv", "plots": [f"{p}.png" for p in self.plots],
                "calibration": "calibration.yaml" if self.calibrates else None}

    def run(self, data: pd.DataFrame, output_dir) -> None:
        data = select(data, self.parameters.get("where"))
        if data.empty:
            raise ValueError("no rows to analyse (check `where`)")
        summary, figures, calibration = self.analyse(data)
        summary.to_csv(os.path.join(output_dir, "summary.csv"), index=False, float_format="%.6g")
        for name, draw in figures.items():
            save(draw, os.path.join(output_dir, f"{name}.png"))
        if self.calibrates:
            import yaml

            with open(os.path.join(output_dir, "calibration.yaml"), "w") as f:
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


def injected_charge(data: pd.DataFrame) -> pd.Series:
    """Injected charge (fC) of each row: Calib through the capacitors its channel connects."""
    calib = data["Calib"] if "Calib" in data else pd.Series(0, index=data.index)
    high = data["HighRange"] if "HighRange" in data else 0
    low = data["LowRange"] if "LowRange" in data else 0
    intctest = data["IntCtest"] if "IntCtest" in data else 1
    return calib * (HIGH_RANGE_FC * high + LOW_RANGE_FC * low) * (intctest > 0)


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = draw()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def chip_panels(chips, title: str, sharey: bool = True):
    """One panel per chip, side by side: (figure, {chip: axes})."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chips = sorted(int(c) for c in chips) or [0]
    fig, axes = plt.subplots(1, len(chips), figsize=(4.6 * len(chips), 4.0), sharey=sharey,
                             squeeze=False, layout="constrained")
    fig.suptitle(title, fontsize=13)
    panels = {}
    for ax, chip in zip(axes[0], chips):
        ax.set_title(f"chip {chip} (roc_s{chip})", fontsize=11)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=9)
        panels[chip] = ax
    return fig, panels


def channel_colors(n: int):
    import matplotlib

    cmap = matplotlib.colormaps["viridis"]
    return [cmap(i / max(n - 1, 1)) for i in range(n)]


def linear_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(slope, intercept) by least squares; NaN with fewer than two distinct x."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    if len(np.unique(x[ok])) < 2:
        return math.nan, math.nan
    slope, intercept = np.polyfit(x[ok], y[ok], 1)
    return float(slope), float(intercept)
