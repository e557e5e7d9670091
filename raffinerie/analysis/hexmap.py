"""Hexmaps: a per-channel quantity drawn on the sensor, each cell a hexagon at its place.

`hexmap(values, geometry, quantity=..., unit=...)` is the one call a
distillery needs. What it draws, after the module testers' hexmaps
(mkilpatr/EstToolsSUSY hexmap/plot_summary.py) and clearer where it can be:

- sensor cells as hexagons coloured by value, one colour bar whose range is
  the data's; cells without a value grey and hatched, never a colour;
- calibration cells as small outlined hexagons inside their cell;
- common-mode words (pentagon: CM0, square: CM1) and not-connected channels
  (circles) at their places around the sensor, coloured like the cells;
- chip boundaries along the cell edges between chips (computed from the
  geometry, not drawn by hand), each chip labelled outside the sensor;
- flagged cells outlined: dead black, noisy red, untunable magenta.
"""

from __future__ import annotations

import numpy as np

from raffinerie.geometry import Geometry, Role
from raffinerie.qc import CellFlag, on_geometry

NO_DATA_COLOR = "#d9d9d9"
OUTLINES = ((CellFlag.DEAD, "black", "dead"), (CellFlag.NOISY, "red", "noisy"),
            (CellFlag.UNTUNABLE, "magenta", "untunable"))
# marker of each role outside the sensor: (vertices, size in cell radii, orientation)
MARKERS = {Role.CM0: (5, 0.75, 0.0), Role.CM1: (4, 0.8, np.pi / 4), Role.NC: (0, 0.6, 0.0)}
MARKER_NAMES = {Role.CALIB: "calibration cell", Role.CM0: "common mode CM0",
                Role.CM1: "common mode CM1", Role.NC: "not connected"}


def values_on(values, geometry: Geometry, column: str | None) -> np.ndarray:
    """One value per geometry row, from an array of that length or a per-channel table."""
    if hasattr(values, "keys") and "chip" in values.keys():
        table = {k: np.asarray(values[k]) for k in ("chip", "channeltype", "channel", column)}
        return on_geometry(table, geometry, column)
    out = np.asarray(values, dtype=float)
    if out.shape != geometry.pad.shape:
        raise ValueError(f"{len(out)} values for the {len(geometry.pad)} channels of {geometry.name}")
    return out


def hexmap(values, geometry: Geometry, *, quantity: str, unit: str = "", column: str | None = None,
           title: str | None = None, flags: np.ndarray | None = None, cmap: str = "viridis"):
    """A matplotlib Figure: `values` (per geometry row, or a table with chip, channeltype,
    channel and `column`, default `quantity`) drawn on `geometry`'s sensor."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    v = values_on(values, geometry, column or quantity)
    fig = Figure(figsize=(9.6, 9.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    lo, hi = colour_range(v, geometry)
    norm = Normalize(lo, hi if hi > lo else lo + 1e-9)
    radius = geometry.pitch / np.sqrt(3)       # touching hexagons of that pitch, pointy side up
    mappable = _cells(ax, v, geometry, radius, norm, cmap)
    _markers(ax, v, geometry, radius, norm, cmap)
    _outlines(ax, geometry, radius, flags)
    _chips(ax, geometry, radius)
    label = f"{quantity} ({unit})" if unit else quantity
    beyond = v[np.isfinite(v)]
    extend = {(False, False): "neither", (True, False): "min", (False, True): "max"}.get(
        (bool((beyond < lo).any()), bool((beyond > hi).any())), "both")
    bar = fig.colorbar(mappable, ax=ax, shrink=0.8, pad=0.02, extend=extend)
    bar.set_label(label, fontsize=12)   # an arrow: a CM or NC value beyond the cells' range
    ax.set_aspect("equal")
    ax.autoscale_view()
    ax.margins(0.06)
    ax.set_xlabel("x (cm)")
    ax.set_ylabel("y (cm)")
    fig.suptitle(title or f"{label} on {geometry.name}", fontsize=13)
    _legend(ax, v, geometry, flags)
    return fig


def colour_range(v: np.ndarray, geometry: Geometry) -> tuple[float, float]:
    """The range of the sensor's cells (normal and calibration): common-mode words and channels
    without a cell (a CM noise is several times a cell's) would squeeze the cells into a
    fraction of the colours; they are drawn at the ends instead, and the bar says so."""
    sensor = (geometry.mask(Role.CELL) | geometry.mask(Role.CALIB)) & np.isfinite(v)
    finite = v[sensor] if sensor.any() else v[np.isfinite(v)]
    return (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)


def _polygons(xy, radius, vertices=6, orientation=0.0) -> np.ndarray:
    """(n, vertices, 2) corners of regular polygons, one vertex up (a circle: 32 corners).

    Vertex arrays for one PolyCollection, not a patch object per cell: 10x faster to draw."""
    k = vertices or 32
    angles = np.pi / 2 + orientation + 2 * np.pi * np.arange(k) / k
    corners = radius * np.column_stack([np.cos(angles), np.sin(angles)])
    return np.asarray(xy, float).reshape(-1, 1, 2) + corners[None, :, :]


def _collection(ax, polygons, values, norm, cmap, gid: str, **kw):
    """Coloured polygons of the finite values (gid `gid`), grey hatched ones of the rest (`gid`-no-value)."""
    from matplotlib.collections import PolyCollection

    known = np.isfinite(values)
    coll = PolyCollection(polygons[known], cmap=cmap, norm=norm, gid=gid, **kw)
    coll.set_array(values[known])
    ax.add_collection(coll)
    if (~known).any():
        ax.add_collection(PolyCollection(polygons[~known], facecolor=NO_DATA_COLOR, hatch="///",
                                         gid=f"{gid}-no-value", **kw))
    return coll


def _cells(ax, v, geometry, radius, norm, cmap):
    cells = geometry.mask(Role.CELL)
    coll = _collection(ax, _polygons(geometry.xy(cells), radius), v[cells], norm, cmap, "cell",
                       edgecolor="white", linewidth=0.8)
    calib = geometry.mask(Role.CALIB)
    _collection(ax, _polygons(geometry.xy(calib), 0.45 * radius), v[calib], norm, cmap, "calib",
                edgecolor="black", linewidth=1.0, zorder=3)
    return coll


def _markers(ax, v, geometry, radius, norm, cmap):
    for role, (vertices, size, orientation) in MARKERS.items():
        mask = geometry.mask(role)
        if mask.any():
            _collection(ax, _polygons(geometry.xy(mask), size * radius, vertices, orientation),
                        v[mask], norm, cmap, role.value, edgecolor="dimgrey", linewidth=0.6)


def _outlines(ax, geometry, radius, flags):
    from matplotlib.collections import PolyCollection

    if flags is None:
        return
    for flag, color, name in OUTLINES:
        mask = (np.asarray(flags) & flag) != 0
        sensor = mask & geometry.mask(Role.CELL)
        calib = mask & geometry.mask(Role.CALIB)
        polygons = np.concatenate([_polygons(geometry.xy(sensor), 0.92 * radius),
                                   _polygons(geometry.xy(calib), 0.5 * radius)])
        if len(polygons):
            ax.add_collection(PolyCollection(polygons, facecolor="none", edgecolor=color,
                                             linewidth=2.6, zorder=4, gid=f"outline-{name}"))


def _chips(ax, geometry, radius):
    from matplotlib.collections import LineCollection

    ax.add_collection(LineCollection(geometry.chip_boundaries(), colors="black", linewidths=2.2,
                                     linestyles=(0, (3, 2)), alpha=0.75, zorder=5, gid="chip-boundaries"))
    cells = geometry.mask(Role.CELL)
    reach = np.hypot(geometry.x, geometry.y).max() + 2.4 * radius   # beyond the CM and NC ring
    for chip in range(geometry.n_chips):
        mine = cells & (geometry.chip == chip)
        cx, cy = geometry.x[mine].mean(), geometry.y[mine].mean()
        angle = np.arctan2(cy, cx)
        ax.text(reach * np.cos(angle), reach * np.sin(angle), f"chip {chip}\nroc_s{chip}", ha="center",
                va="center", fontsize=10, fontweight="bold", color="black")
    ax.update_datalim([(-reach - radius, -reach - radius), (reach + radius, reach + radius)])


def _legend(ax, v, geometry, flags):
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Line2D([], [], ls="none", marker=m, ms=10, mfc="white", mec="black", label=MARKER_NAMES[r])
               for r, m in ((Role.CALIB, "h"), (Role.CM0, "p"), (Role.CM1, "s"), (Role.NC, "o"))
               if geometry.mask(r).any()]
    handles.append(Line2D([], [], color="black", ls=(0, (3, 2)), lw=2, label="chip boundary"))
    if (~np.isfinite(v)).any():
        handles.append(Patch(facecolor=NO_DATA_COLOR, hatch="///", edgecolor="grey", label="no value"))
    if flags is not None:
        for flag, color, name in OUTLINES:
            count = int(((np.asarray(flags) & flag) != 0).sum())
            if count:
                handles.append(Patch(facecolor="none", edgecolor=color, lw=2.6, label=f"{name} ({count})"))
    # a figure legend "outside": constrained layout makes room for it below the map
    ax.figure.legend(handles=handles, loc="outside lower center", ncol=4, fontsize=9, frameon=False)
